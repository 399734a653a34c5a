"""One SMPP 3.4 ESME session as a Twisted protocol, PDUs coded by smpplib.

Why a protocol on the reactor and not smpplib's blocking ``Client`` in a
thread (what the link used to be): a session is a window of requests in
flight, each with its own response timer, a pacer, an enquire_link timer and
a read timer -- five clocks.  On the reactor each is a ``callLater`` on the
injected clock, testable on ``StringTransport`` + ``Clock`` to the byte and
the second; in a thread each is a ``select`` deadline on the wall clock.
Measured on the same SMSC simulator (``docs/sms.md``), the old thread link
did one submit per round trip and cost a thread hop per message; this one
keeps ``window`` submits in flight.  smpplib stays the codec: its command
classes build and parse every PDU (``client=self`` gives them our sequence
numbers), so the bytes on the wire are the ones its users already trust.

This module knows nothing of messages or the outbox: it binds, answers the
SMSC's requests, matches responses to requests by sequence number and says
when the session ends.  Policy (window, pacing, retries) is the link's.

Bounded everywhere: a ``command_length`` above ``max_pdu_length`` drops the
session at once (before buffering), a PDU whose bytes stop arriving midway
drops it after ``pdu_read_timeout``, every request has its response timer,
and an enquire_link left unanswered means a dead link.
"""
from __future__ import annotations

import smpplib.consts
import smpplib.exceptions
from smpplib import smpp
from twisted.internet import defer, error, protocol, task

from billgw.sms import smpp_pdu as codec

# A bind refused for these reasons will be refused again: stop, alert.
CREDENTIAL_STATUSES = frozenset({
    0x0D,  # ESME_RBINDFAIL
    0x0E,  # ESME_RINVPASWD
    0x0F,  # ESME_RINVSYSID
})
MAX_SEQUENCE = 0x7FFFFFFF


class _Scratch:
    """smpplib draws a sequence number for every command it builds, parsed
    ones and answers included; those get this client's, so our own series
    stays gap-free.  (parse() and we then set the real one.)"""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


_SCRATCH = _Scratch()


def describe_status(status: int | None) -> str:
    if status is None:
        return "no status"
    name = smpplib.consts.DESCRIPTIONS.get(status, "unknown status")
    return f"0x{status:08X} ({name})"


class SessionError(Exception):
    """Base of what can end a request on this session."""


class BindRefused(SessionError):
    def __init__(self, status: int):
        super().__init__(f"bind refused: status {describe_status(status)}")
        self.status = status

    @property
    def credentials(self) -> bool:
        return self.status in CREDENTIAL_STATUSES


class ResponseTimeout(SessionError):
    """The request was written; no response came in time."""


class SessionLost(SessionError):
    """The connection ended before the response came."""


def text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


class _Pending:
    __slots__ = ("command", "deferred", "timer")

    def __init__(self, command, deferred, timer):
        self.command = command
        self.deferred = deferred
        self.timer = timer


class SmppClientProtocol(protocol.Protocol):
    """An ESME session.  ``bound`` fires once the bind is accepted (or fails
    with :class:`BindRefused` / :class:`ResponseTimeout` / :class:`SessionLost`);
    ``lost`` fires with a reason string when the connection has ended."""

    def __init__(self, *, clock, bind_mode: str, system_id: str, password: str, system_type: str = "",
                 addr_ton: int = 0, addr_npi: int = 0, address_range: str = "",
                 response_timeout: float = 10.0, enquire_link_interval: float = 30.0,
                 enquire_link_timeout: float = 10.0, pdu_read_timeout: float = 10.0,
                 max_pdu_length: int = codec.MAX_LENGTH, log, on_deliver=None):
        self.clock = clock
        self._bind = dict(system_id=system_id, password=password, system_type=system_type,
                          addr_ton=addr_ton, addr_npi=addr_npi, address_range=address_range)
        self.bind_mode = bind_mode
        self.response_timeout = response_timeout
        self.enquire_link_interval = enquire_link_interval
        self.enquire_link_timeout = enquire_link_timeout
        self.pdu_read_timeout = pdu_read_timeout
        self.log = log
        self.on_deliver = on_deliver
        self.framer = codec.PduFramer(max_pdu_length)
        self.bound = defer.Deferred()
        self.lost = defer.Deferred()
        self.is_bound = False
        self._sequence = 0
        self._pending: dict[int, _Pending] = {}
        self._read_timer = None
        self._keepalive: task.LoopingCall | None = None
        self._end_reason = "connection closed by the SMSC"
        self._gone = False

    # smpplib's command classes draw sequence numbers from their "client".
    @property
    def sequence(self) -> int:
        return self._sequence

    def next_sequence(self) -> int:
        self._sequence = 1 if self._sequence >= MAX_SEQUENCE else self._sequence + 1
        return self._sequence

    @property
    def in_flight(self) -> int:
        return sum(1 for p in self._pending.values() if p.command == "submit_sm")

    # ------------------------------------------------------------------
    def connectionMade(self):
        command = f"bind_{self.bind_mode}"
        d = self.request(smpp.make_pdu(command, client=self, **self._bind), self.response_timeout)
        d.addCallbacks(self._bind_answered, self._bind_failed)

    def _bind_answered(self, resp):
        if resp.status != smpplib.consts.SMPP_ESME_ROK:
            self._bind_failed(BindRefused(resp.status))
            return
        self.is_bound = True
        self._keepalive = task.LoopingCall(self._enquire_link)
        self._keepalive.clock = self.clock
        self._keepalive.start(self.enquire_link_interval, now=False)
        self.bound.callback(text(getattr(resp, "system_id", "")))

    def _bind_failed(self, reason):
        exc = reason.value if hasattr(reason, "value") else reason
        self._end(f"bind failed: {exc}")
        if not self.bound.called:
            self.bound.errback(exc)

    def _enquire_link(self):
        d = self.request(smpp.make_pdu("enquire_link", client=self), self.enquire_link_timeout)

        def unanswered(f):
            if f.check(ResponseTimeout):
                self.log.warning("smpp.dead_link", timeout=self.enquire_link_timeout)
                self._end(f"dead link: no enquire_link_resp within {self.enquire_link_timeout}s")
            # SessionLost: the session is ending anyway.

        d.addErrback(unanswered)

    def request(self, pdu, timeout: float) -> defer.Deferred:
        """Write ``pdu``; fires with its response PDU, or fails with
        :class:`ResponseTimeout` / :class:`SessionLost`.  Encoding errors
        (a value smpplib cannot encode) raise here, before anything is written."""
        data = pdu.generate()
        if self.transport is None or self.transport.disconnecting or self._gone:
            return defer.fail(SessionLost("not connected"))
        sequence = pdu.sequence
        d = defer.Deferred()
        timer = self.clock.callLater(timeout, self._timed_out, sequence, timeout)
        self._pending[sequence] = _Pending(pdu.command, d, timer)
        self.transport.write(data)
        return d

    def _timed_out(self, sequence: int, timeout: float):
        pending = self._pending.pop(sequence, None)
        if pending is not None:
            pending.deferred.errback(ResponseTimeout(f"no {pending.command}_resp within {timeout}s"))

    def respond(self, request, command: str, status: int = 0, **fields) -> None:
        resp = smpp.make_pdu(command, client=_SCRATCH, status=status, **fields)
        resp.sequence = request.sequence_number if isinstance(request, codec.Pdu) else request.sequence
        if self.transport is not None and not self.transport.disconnecting:
            self.transport.write(resp.generate())

    def unbind(self, timeout: float) -> defer.Deferred:
        """Unbind politely, then close; fires once the connection is gone."""
        if self.is_bound and not self.lost.called:
            self.is_bound = False
            d = self.request(smpp.make_pdu("unbind", client=self), timeout)
            d.addBoth(lambda _: self._end("unbound"))
        else:
            self._end("stopping")
        return self._when_lost()

    def _when_lost(self) -> defer.Deferred:
        d = defer.Deferred()
        if self.lost.called:
            d.callback(None)
        else:
            self.lost.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _end(self, reason: str, abort: bool = True) -> None:
        if self._gone:
            return
        self._end_reason = reason
        if self.transport is not None:
            if abort:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()

    # ------------------------------------------------------------------
    def dataReceived(self, data: bytes):
        try:
            frames = self.framer.add_and_parse(data)
        except codec.PduError as e:
            self.log.warning("smpp.bad_frame", error=str(e))
            self._end(f"bad frame from the SMSC: {e}")
            return
        if frames and self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        for frame in frames:
            if self.lost.called or self.transport.disconnecting:
                return
            self._frame_received(frame)
        if self.framer.partial and self._read_timer is None and not self.lost.called:
            self._read_timer = self.clock.callLater(self.pdu_read_timeout, self._read_timed_out)

    def _read_timed_out(self):
        self._read_timer = None
        self.log.warning("smpp.read_timeout", timeout=self.pdu_read_timeout)
        self._end(f"SMSC stopped in the middle of a PDU for {self.pdu_read_timeout}s")

    def _frame_received(self, frame: bytes):
        header = codec.decode_pdu(frame)
        try:
            pdu = smpp.parse_pdu(frame, client=_SCRATCH, allow_unknown_opt_params=True)
        except Exception as e:  # unknown command id, malformed body: answer, go on
            self.log.warning("smpp.unreadable_pdu", command_id=f"0x{header.command_id:08X}",
                             sequence=header.sequence_number, error=repr(e)[:200])
            if header.command_id & codec.RESPONSE:
                pending = self._pending.pop(header.sequence_number, None)
                if pending is not None:
                    pending.timer.cancel()
                    pending.deferred.errback(ResponseTimeout(f"unreadable {pending.command}_resp"))
            else:
                self.respond(header, "generic_nack", codec.ESME_RINVCMDID)
            return
        command = pdu.command
        if command.endswith("_resp") or command == "generic_nack":
            pending = self._pending.pop(pdu.sequence, None)
            if pending is None:
                self.log.info("smpp.late_response", command=command, sequence=pdu.sequence,
                              status=describe_status(pdu.status))
                return
            pending.timer.cancel()
            pending.deferred.callback(pdu)
        elif command == "enquire_link":
            self.respond(pdu, "enquire_link_resp")
        elif command == "deliver_sm":
            # Answer first: an unanswered deliver_sm is redelivered, and
            # nothing the handler does may stop the answer.
            self.respond(pdu, "deliver_sm_resp")
            if self.on_deliver is not None:
                try:
                    self.on_deliver(pdu)
                except Exception:
                    self.log.exception("smpp.deliver_handler_failed")
        elif command == "unbind":
            self.respond(pdu, "unbind_resp")
            self.is_bound = False
            self._end("SMSC unbound", abort=False)
        else:
            self.respond(pdu, "generic_nack", codec.ESME_RINVCMDID)

    def connectionLost(self, reason=protocol.connectionDone):
        self._gone = True
        self.is_bound = False
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.timer.cancel()
        if not reason.check(error.ConnectionDone, error.ConnectionLost):
            self._end_reason = f"{self._end_reason} ({reason.getErrorMessage()})"
        # ``lost`` first, so that whoever handles the failed requests below
        # already sees the session as gone.
        self.lost.callback(self._end_reason)
        for p in pending.values():
            p.deferred.errback(SessionLost(f"{self._end_reason} before {p.command}_resp"))
        if not self.bound.called:
            self.bound.errback(SessionLost(self._end_reason))
