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

A frame that decodes but is invalid is answered with the format-error code
and the keys it had.  A frame that cannot be answered at all (no request
MTI could be read) and a broken length header close the connection: after
that the byte stream cannot be trusted.
"""
from __future__ import annotations

import structlog
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin

from billgw.iso8583.codes import Outcome, ResponseCodes
from billgw.iso8583.dump import annotate
from billgw.iso8583.framing import Framer, FramingError, encode_frame
from billgw.iso8583.messages import (
    BillRequest,
    MessageFormatError,
    NetworkRequest,
    Response,
    decode_request,
    echo_fields,
    format_error_response,
)


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


class Iso8583ServerProtocol(Protocol, TimeoutMixin):
    def __init__(self, factory: "Iso8583ServerFactory"):
        self.factory = factory
        self.framer = Framer(factory.framing, factory.max_frame)
        self.session = Session(factory.require_sign_on)
        self.log = factory.log
        # TimeoutMixin schedules through this; the factory's clock is injected.
        self.callLater = factory.clock.callLater
        # Set by connectionLost: Twisted resets only the transport's
        # ``connected``, never the protocol's, so ``send`` checks this.
        self._gone = False
        self.in_flight = 0

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.log = self.factory.log.bind(peer=f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}")
        self.log.info("connection opened")
        self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason=None):
        self._gone = True
        self.setTimeout(None)
        self.log.info("connection closed", reason=reason.getErrorMessage() if reason else None)

    def timeoutConnection(self):
        self.log.info("idle timeout: closing connection", idle_timeout=self.factory.idle_timeout)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes):
        self.resetTimeout()
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.log.warning("bad frame header: closing connection", error=str(exc))
            self.transport.loseConnection()
            return
        for frame in frames:
            self.frame_received(frame)

    def frame_received(self, payload: bytes):
        try:
            request = decode_request(payload)
        except MessageFormatError as exc:
            self._format_error(payload, exc)
            return
        log = self.log.bind(mti=request.mti, stan=request.fields.get("11"))
        if isinstance(request, NetworkRequest):
            response = self.session.network(request, self.factory.codes)
            log.info("network management", code=request.code, response_code=response.response_code,
                     signed_on=self.session.signed_on)
            self.send(response)
            return
        if request.mti == "0200" and not self.session.may_transact():
            # Only new work is refused: advices and reversals concern money
            # already moved, and are taken whenever they come.
            log.warning("financial request before sign-on")
            self.send(request.respond(self.factory.codes.code(Outcome.NOT_SIGNED_ON)))
            return
        factory = self.factory
        if self.in_flight >= factory.max_in_flight_per_connection or factory.in_flight >= factory.max_in_flight:
            factory.refused_busy += 1
            log.warning("busy: request refused", in_flight=self.in_flight, gateway_in_flight=factory.in_flight)
            busy = factory.codes.code(Outcome.GATEWAY_BUSY)
            self.send(request.respond_bill(busy) if isinstance(request, BillRequest) else request.respond(busy))
            return
        self.in_flight += 1
        factory.in_flight += 1
        d = factory.processor.handle(request, log)
        d.addBoth(self._done)
        d.addCallback(self.send)
        d.addErrback(lambda f: log.error("could not answer", exc_info=(f.type, f.value, f.tb)))

    def _done(self, result):
        self.in_flight -= 1
        self.factory.in_flight -= 1
        return result

    def _format_error(self, payload: bytes, exc: MessageFormatError):
        response = format_error_response(exc, self.factory.codes.code(Outcome.FORMAT_ERROR))
        try:
            dump = annotate(payload)
        except Exception:  # the dump of an undecodable frame may itself fail
            dump = f"{len(payload)} bytes, not decodable"
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
        self.transport.write(encode_frame(payload, self.factory.framing))


class Iso8583ServerFactory(Factory):
    protocol = Iso8583ServerProtocol

    def __init__(self, *, processor, codes: ResponseCodes, clock, framing: str = "binary2",
                 max_frame: int = 4096, idle_timeout: float = 300.0, require_sign_on: bool = True,
                 max_in_flight_per_connection: int = 64, max_in_flight: int = 512, log=None):
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

    def buildProtocol(self, addr):
        return Iso8583ServerProtocol(self)
