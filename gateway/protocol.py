"""The ISO 8583 server protocol: framing, sessions, and hand-off to the processor.

The protocol is thin on purpose: it frames bytes, decodes them with the pure
codec, answers network management (sign-on, sign-off, echo) itself, and
hands bill requests to the processor, writing back whatever Response the
processor's Deferred fires with.  Requests may be pipelined; answers go out
as they are ready and the switch matches them by their keys.

Requests in flight are capped per connection and over the factory (all
connections): beyond a cap a request is answered at once with the
``gateway_busy`` code and never reaches the processor, so nothing is
journaled and the switch may send it again.  Without the caps one peer's
pipelined flood queued without bound and pushed another switch's inquiry
past its 30 s.

Who is talking is settled per connection (gateway/peers.py): the factory
refuses a connection from no configured peer, and one past the
connection caps (overall, per peer), when it is accepted -- no protocol is
built, nothing is read -- with a log line and a counter.  Sign-on, when the
peer requires it, comes before any financial message (0200, 0220, 0420:
an advice or a reversal moves money too).  A message for an acquirer (F32,
or the original's in F90) or a terminal (F41) the peer may not use is
answered with the ``not_permitted`` code and never reaches the processor,
so it is neither journaled nor sent to a biller.

Over mutual TLS a connection's peer may be known only by its client
certificate: then it is settled when the handshake completes (a
connection that does not finish it within ``frame_timeout`` is closed), and
the per-peer connection cap applies from then.  A peer that MACs its
messages has every request verified (iso8583/mac.py) -- a missing or wrong
MAC is answered with the ``security_violation`` code and goes no further,
an 0800 included -- and every answer MACed.  A peer's terminals may be
rate-limited (a token bucket per terminal, gateway/rate_limit.py): a 0200
beyond it is answered with the ``rate_limited`` code at once.  Advices and
reversals have a bucket per peer instead, when configured: each may leave
a row for a person, and one peer must not make them without bound; one
answered so is not acknowledged, so the switch repeats it later.

Two timers guard the connection: the idle timeout, reset by complete frames
only (a byte every few seconds is not traffic), and the frame timeout: a
frame begun must be complete within ``frame_timeout`` seconds, whatever
trickles meanwhile (slowloris), or the connection is closed.

A frame that decodes but is invalid is answered with the format-error code
and the keys it had (its dump logged for the first few of a connection
only, so a peer sending garbage cannot fill the log).  A frame that cannot be answered at all (no request
MTI could be read) and a broken length header close the connection: after
that the byte stream cannot be trusted.
"""
from __future__ import annotations

import collections
import dataclasses

import structlog
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from billgw.iso8583.bill_data import ASCII, to_ascii
from billgw.iso8583.codes import Outcome, ResponseCodes
from billgw.iso8583.dump import annotate
from billgw.iso8583.framing import Framer, FramingError, encode_frame
from billgw.iso8583.mac import sign as mac_sign
from billgw.iso8583.messages import (
    BillRequest,
    MessageFormatError,
    NetworkRequest,
    Response,
    ReversalRequest,
    decode_request,
    echo_fields,
    format_error_response,
)

from .peers import DEFAULT_PEERS, Peer, PeerTable
from .guards import RateBuckets, mac_refusal
from .tls import peer_subject, tls_failure

# Format errors of one connection logged with their dump; later ones without.
DUMPED_FORMAT_ERRORS = 3


class Session:
    """What one connection has negotiated: whether the peer signed on."""

    def __init__(self, require_sign_on: bool):
        self.require_sign_on = require_sign_on
        self.signed_on = False

    def network(self, request: NetworkRequest, codes: ResponseCodes) -> Response:
        action = request.action
        if action == "sign_on":
            self.signed_on = True
        elif action == "sign_off":
            self.signed_on = False
        elif action != "echo":
            return request.respond(codes.code(Outcome.INVALID_TRANSACTION))
        return request.respond(codes.code(Outcome.APPROVED))

    def may_transact(self) -> bool:
        return self.signed_on or not self.require_sign_on


@implementer(IHandshakeListener)
class Iso8583ServerProtocol(Protocol, TimeoutMixin):
    def __init__(self, factory: "Iso8583ServerFactory", peer: Peer | None):
        self.factory = factory
        # None until the TLS handshake names it (peers by certificate).
        self.peer = peer
        self.framer = Framer(factory.framing, factory.max_frame)
        self.session = Session(peer.require_sign_on if peer is not None else True)
        self.log = factory.log
        # TimeoutMixin schedules through this; the factory's clock is injected.
        self.callLater = factory.clock.callLater
        # Set by connectionLost: Twisted resets only the transport's
        # ``connected``, never the protocol's, so ``send`` checks this.
        self._gone = False
        self.in_flight = 0
        self.format_errors = 0
        self._frame_deadline = None  # DelayedCall while a frame is incomplete
        self._host = "?"

    def connectionMade(self):
        address = self.transport.getPeer()
        self._host = getattr(address, "host", "?")
        self.log = self.factory.log.bind(peer=f"{self._host}:{getattr(address, 'port', '?')}",
                                         peer_name=self.peer.name if self.peer is not None else None)
        self.factory.connection_opened(self.peer)
        self.log.info("connection opened")
        self.setTimeout(self.factory.idle_timeout)
        if self.peer is None:
            # The handshake must end in time too, or this is a slowloris.
            self._frame_deadline = self.factory.clock.callLater(self.factory.frame_timeout,
                                                                self._handshake_timed_out)

    def handshakeCompleted(self):
        """TLS is up: settle the peer by its certificate (when pending)."""
        if self.peer is not None or self._gone:
            return
        self._stop_frame_timer()
        subject = peer_subject(self.transport)
        peer = self.factory.identify(self._host, subject, self.log)
        if peer is None:
            self.transport.abortConnection()
            return
        self.peer = peer
        self.session = Session(peer.require_sign_on)
        self.log = self.log.bind(peer_name=peer.name)
        self.log.info("peer identified by its certificate", subject=subject)

    def _handshake_timed_out(self):
        self._frame_deadline = None
        self.factory.count("tls_handshake_timeout")
        self.log.warning("no TLS handshake in time: closing connection", frame_timeout=self.factory.frame_timeout)
        self.transport.abortConnection()

    def connectionLost(self, reason=None):
        self._gone = True
        self.setTimeout(None)
        self._stop_frame_timer()
        self.factory.connection_closed(self.peer)
        failure = tls_failure(reason)
        if failure is not None:
            self.factory.count("tls_handshake_failed")
            self.log.warning("connection closed: TLS failed", error=failure,
                             refusals=self.factory.counters["tls_handshake_failed"])
            return
        self.log.info("connection closed", reason=reason.getErrorMessage() if reason else None)

    def _stop_frame_timer(self):
        if self._frame_deadline is not None and self._frame_deadline.active():
            self._frame_deadline.cancel()
        self._frame_deadline = None

    def _frame_timed_out(self):
        self._frame_deadline = None
        self.factory.count("closed_incomplete_frame")
        self.log.warning("no complete frame in time: closing connection", frame_timeout=self.factory.frame_timeout,
                         buffered=self.framer.buffered)
        self.transport.loseConnection()

    def timeoutConnection(self):
        self.log.info("idle timeout: closing connection", idle_timeout=self.factory.idle_timeout)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes):
        if self._gone:
            return
        if self.peer is None:  # TLS delivers nothing before the handshake; be sure
            self.transport.abortConnection()
            return
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.factory.count("bad_frame_header")
            self.log.warning("bad frame header: closing connection", error=str(exc))
            self.transport.loseConnection()
            return
        if frames:
            # Only complete frames are traffic: a byte at a time is not.
            self.resetTimeout()
            self._stop_frame_timer()
        if self.framer.buffered and self._frame_deadline is None:
            self._frame_deadline = self.factory.clock.callLater(self.factory.frame_timeout, self._frame_timed_out)
        for frame in frames:
            self.frame_received(frame)

    def frame_received(self, payload: bytes):
        try:
            request = decode_request(payload, self.factory.pan_hasher)
        except MessageFormatError as exc:
            self._format_error(payload, exc)
            return
        log = self.log.bind(mti=request.mti, stan=request.fields.get("11"))
        refused = mac_refusal(self.peer, payload, request, self.factory.counters, log)
        if refused is not None:
            self._refuse(request, refused)
            return
        if isinstance(request, NetworkRequest):
            if request.action == "cut_over":
                self._cut_over(request, log)
                return
            response = self.session.network(request, self.factory.codes)
            log.info("network management", code=request.code, response_code=response.response_code,
                     signed_on=self.session.signed_on)
            self.send(response)
            return
        factory = self.factory
        if not self.session.may_transact():
            # Advices and reversals too: they move money as much as a 0200
            # does; the switch signs on and sends them again (0221/0421).
            factory.count("not_signed_on")
            log.warning("financial request before sign-on")
            self._refuse(request, Outcome.NOT_SIGNED_ON)
            return
        refused = self._not_permitted(request)
        if refused is not None:
            factory.count("not_permitted")
            log.warning("request refused: not permitted for this peer", refused=refused,
                        acquirer=request.fields.get("32"), terminal=request.fields.get("41"),
                        refusals=factory.counters["not_permitted"])
            self._refuse(request, Outcome.NOT_PERMITTED)
            return
        refused = factory.rate_buckets.refusal(self.peer, request, factory.clock.seconds(), factory.counters, log)
        if refused is not None:
            self._refuse(request, refused)
            return
        peer_in_flight = factory.peer_in_flight[self.peer.name]
        if (self.in_flight >= factory.max_in_flight_per_connection or factory.in_flight >= factory.max_in_flight
                or (self.peer.max_in_flight is not None and peer_in_flight >= self.peer.max_in_flight)):
            factory.refused_busy += 1
            factory.count("busy")
            log.warning("busy: request refused", in_flight=self.in_flight, gateway_in_flight=factory.in_flight,
                        peer_in_flight=peer_in_flight)
            self._refuse(request, Outcome.GATEWAY_BUSY)
            return
        self.in_flight += 1
        factory.in_flight += 1
        factory.peer_in_flight[self.peer.name] += 1
        d = factory.processor.handle(request, log)
        d.addBoth(self._done)
        d.addCallback(self.send)
        d.addErrback(lambda f: log.error("could not answer", exc_info=(f.type, f.value, f.tb)))

    def _cut_over(self, request: NetworkRequest, log) -> None:
        """0800 with F70 = 201: the peer closes its business day.  The new
        date is the journal's (every process reads it), so the processor
        records it before the 0810 goes out; it moves every payment's date,
        so it needs a signed-on peer, like a financial message."""
        codes = self.factory.codes
        cut_over = getattr(self.factory.processor, "cut_over", None)
        if not self.session.may_transact():
            log.warning("cut-over before sign-on")
            self.send(request.respond(codes.code(Outcome.NOT_SIGNED_ON)))
            return
        if cut_over is None or not self.peer.cut_over:
            log.warning("cut-over refused: this peer may not close the business day", peer_may=self.peer.cut_over)
            self.send(request.respond(codes.code(Outcome.INVALID_TRANSACTION)))
            return
        d = cut_over(request, by=self.peer.name, log=log)
        d.addCallback(self.send)
        d.addErrback(lambda f: log.error("could not answer a cut-over", exc_info=(f.type, f.value, f.tb)))

    def _done(self, result):
        self.in_flight -= 1
        self.factory.in_flight -= 1
        self.factory.peer_in_flight[self.peer.name] -= 1
        return result

    def _refuse(self, request, outcome: Outcome):
        code = self.factory.codes.code(outcome)
        self.send(request.respond_bill(code) if isinstance(request, BillRequest) else request.respond(code))

    def _not_permitted(self, request) -> str | None:
        """Why this connection's peer may not send ``request`` (None: it may).

        A payment or advice speaks for its F32; a reversal for the acquirer
        of the original it names in F90 (its own F32, when present, too), so
        no peer can reverse another's payments.  F41 in either case."""
        if isinstance(request, ReversalRequest):
            acquirers = [request.original_keys.acquirer_id]
            if request.fields.get("32"):
                acquirers.append(request.fields["32"])
        else:
            acquirers = [request.fields.get("32")]
        return self.peer.refuses(acquirers, request.fields.get("41"))

    def _format_error(self, payload: bytes, exc: MessageFormatError):
        response = format_error_response(exc, self.factory.codes.code(Outcome.FORMAT_ERROR))
        try:
            dump = annotate(payload)
        except Exception:  # the dump of an undecodable frame may itself fail
            dump = f"{len(payload)} bytes, not decodable"
        self.format_errors += 1
        self.factory.count("format_error")
        if self.format_errors > DUMPED_FORMAT_ERRORS:
            dump = f"{len(payload)} bytes (dump not logged: format error {self.format_errors} of this connection)"
        if response is None:
            self.log.warning("undecodable frame: closing connection", error=str(exc), dump=dump)
            self.transport.loseConnection()
            return
        self.log.warning("format error", error=str(exc), field=exc.field, dump=dump)
        self.send(response)

    def send(self, response: Response):
        if self._gone:
            self.log.warning("answer ready but the connection is gone", mti=response.mti,
                             stan=response.fields.get("11"), response_code=response.response_code)
            return
        try:
            if self.peer.f48_encoding == ASCII and response.fields.get("48"):
                # This peer's decoder takes ASCII only (conf/ f48_encoding).
                response = Response(response.mti, {**response.fields,
                                                   "48": to_ascii(response.fields["48"], self.peer.f48_names)})
            payload = response.encode()
        except Exception:
            # Every request gets an answer: the processor checks its answers
            # before journaling them, so this is a bug -- answered 96 with the
            # request's keys, never silence.
            self.log.error("answer cannot be encoded: answering system malfunction", mti=response.mti,
                           stan=response.fields.get("11"), exc_info=True)
            fallback = {f: v for f, v in response.fields.items() if f in echo_fields(response.mti)}
            fallback["39"] = self.factory.codes.code(Outcome.SYSTEM_MALFUNCTION)
            payload = Response(response.mti, fallback).encode()
        if self.peer is not None and self.peer.mac is not None:
            payload = mac_sign(payload, self.peer.mac)
        self.transport.write(encode_frame(payload, self.factory.framing))


class Iso8583ServerFactory(Factory):
    protocol = Iso8583ServerProtocol

    def __init__(self, *, processor, codes: ResponseCodes, clock, framing: str = "binary2",
                 max_frame: int = 4096, idle_timeout: float = 300.0, require_sign_on: bool = True,
                 max_in_flight_per_connection: int = 64, max_in_flight: int = 512, log=None,
                 peers: PeerTable | None = None, max_connections: int = 256, frame_timeout: float = 30.0,
                 tls_client_certificates: bool = False, pan_hasher=None):
        self.processor = processor
        self.codes = codes
        self.clock = clock
        self.framing = framing
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.require_sign_on = require_sign_on
        self.max_in_flight_per_connection = max_in_flight_per_connection
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # over all connections
        self.refused_busy = 0
        self.log = log or structlog.get_logger("billgw.iso8583")
        if peers is None:
            # The built-in loopback peer, with the listener's sign-on rule.
            peers = PeerTable(dataclasses.replace(p, require_sign_on=require_sign_on) for p in DEFAULT_PEERS.peers)
        self.peers = peers
        self.max_connections = max_connections
        self.frame_timeout = frame_timeout
        self.connections = 0
        self.peer_connections: collections.Counter[str] = collections.Counter()
        self.peer_in_flight: collections.Counter[str] = collections.Counter()
        # Refusals and closes by reason, for the operator (docs/security.md).
        self.counters: collections.Counter[str] = collections.Counter()
        # Over mutual TLS with peers known by certificate: settle each
        # connection's peer after the handshake (handshakeCompleted).
        self.tls_client_certificates = tls_client_certificates
        # Keys the PAN's HMAC into the journal (None: no hash kept).
        self.pan_hasher = pan_hasher
        self.rate_buckets = RateBuckets()

    def count(self, reason: str) -> None:
        self.counters[reason] += 1

    def connection_opened(self, peer: Peer | None) -> None:
        self.connections += 1
        if peer is not None:
            self.peer_connections[peer.name] += 1

    def connection_closed(self, peer: Peer | None) -> None:
        self.connections -= 1
        if peer is not None:
            self.peer_connections[peer.name] -= 1

    def identify(self, host: str, subject: str | None, log) -> Peer | None:
        """The peer of a connection whose TLS handshake presented ``subject``
        (None: no certificate), counted in; None (logged, counted) when no
        peer is both at this address and of this certificate, or the peer
        is at its connection cap."""
        peer = self.peers.identify(host, subject)
        if peer is None:
            self.count("unknown_peer")
            log.warning("connection refused: no configured peer for this address and certificate",
                        subject=subject, refusals=self.counters["unknown_peer"])
            return None
        if self.peer_connections[peer.name] >= peer.max_connections:
            self.count("peer_connection_cap")
            log.warning("connection refused: peer connection cap reached", peer_name=peer.name,
                        connections=self.peer_connections[peer.name], max_connections=peer.max_connections)
            return None
        self.peer_connections[peer.name] += 1
        return peer

    def status(self) -> dict:
        """What an operator reads (the periodic counters log line, health):
        connections, requests in flight, refusals and closes by reason."""
        return {"connections": self.connections, "in_flight": self.in_flight,
                "peer_connections": {k: v for k, v in self.peer_connections.items() if v},
                "refusals": dict(sorted(self.counters.items()))}

    def buildProtocol(self, addr):
        """The protocol for an accepted connection, or None to close it at
        once: from no configured peer, or past a connection cap."""
        host = getattr(addr, "host", None) or ""
        shown = f"{host}:{getattr(addr, 'port', '?')}"
        if self.tls_client_certificates:
            peer = None  # settled by its certificate, after the handshake
            known = bool(self.peers.candidates(host))
        else:
            peer = self.peers.identify(host)
            known = peer is not None
        if not known:
            self.count("unknown_peer")
            self.log.warning("connection refused: no configured peer for this address", peer=shown,
                             refusals=self.counters["unknown_peer"])
            return None
        if self.connections >= self.max_connections:
            self.count("connection_cap")
            self.log.warning("connection refused: gateway connection cap reached", peer=shown,
                             peer_name=peer.name if peer is not None else None,
                             connections=self.connections, max_connections=self.max_connections)
            return None
        if peer is not None and self.peer_connections[peer.name] >= peer.max_connections:
            self.count("peer_connection_cap")
            self.log.warning("connection refused: peer connection cap reached", peer=shown, peer_name=peer.name,
                             connections=self.peer_connections[peer.name], max_connections=peer.max_connections)
            return None
        return Iso8583ServerProtocol(self, peer)
