"""The SMPP link: one bind kept up, a window of submits, a pacer, one answer per message.

:class:`SmppLink` is a Service around :class:`~billgw.sms.smpp_client.SmppClientProtocol`
(the session, on the reactor).  It owns the policy:

* **Window.** At most ``window`` submit_sm in flight on the bind (default 10,
  what SMSCs commonly grant).  The parts of one concatenated message go one
  after the other, each under its own response timer (``response_timeout``
  covers one part, never the whole message), so a window holds up to
  ``window`` messages.
* **Pacer.** Submits are spaced to ``rate`` per second; a temporary refusal
  (per the status table in ``conf/smpp_status.toml``) pauses the whole bind,
  doubling per consecutive refusal (:mod:`billgw.sms.pacer`).
* **One answer per message**, as one of:
  :class:`SubmitResult` (every part accepted);
  :class:`SmppLinkDown` (nothing of it was written: retry, it cost nothing);
  :class:`SmppSubmitError` (the SMSC refused its first part; ``permanent``
  from the table);
  :class:`SmppInvalidMessage` (this message cannot be sent at all: a bad
  MSISDN, text that cannot be encoded -- it fails alone, the bind is not
  touched);
  :class:`SmppUncertain` (a part was written and never answered -- timeout
  or link lost -- or only some parts were accepted: the SMSC may have it,
  resending could duplicate or leave fragments; see docs/sms.md).
  A refused later part is retried in place, with the same UDH reference,
  up to ``part_retries`` times, so the handset can still join the parts.
* **Reconnect** with exponential back-off and jitter on the injected clock,
  reset by every successful bind.  A bind refused for its credentials
  (0x0D/0x0E/0x0F) will be refused again: the link stops trying, logs an
  error (``smpp.bind_refused``, the alert) and reports state REFUSED, which
  the health state and the audit show; a restart after fixing the
  credentials binds again.  Not a reconnect storm.

Why this is not twisted's ClientService: ClientService counts a connection
as good once TCP connects (or ``prepareConnection`` fires), and has no
"stop: refused for good" outcome; the bind's own answer decides both here.
"""
from __future__ import annotations

import collections
import enum
import random
from dataclasses import dataclass, field

import structlog
from smpplib import smpp
from twisted.application.service import Service
from twisted.internet import defer, endpoints
from twisted.python.failure import Failure

from billgw.sms.backoff import exponential_backoff
from billgw.sms.encoding import (
    CONCATENATION_SCHEMES,
    REFERENCE_MODULUS,
    EncodedMessage,
    MessageTooLong,
    ReferenceCounter,
    split_message,
)
from billgw.sms.msisdn import Destination, InvalidMsisdn, normalise_msisdn
from billgw.sms.pacer import Pacer
from billgw.sms.smpp_client import (
    BindRefused,
    ResponseTimeout,
    SessionLost,
    SmppClientProtocol,
    describe_status,
    text,
)
from billgw.sms.smpplib_logging import route_smpplib_logging
from billgw.sms.status_table import StatusTable, load_status_table


class LinkState(enum.Enum):
    STOPPED = "STOPPED"
    CONNECTING = "CONNECTING"
    BOUND = "BOUND"
    DOWN = "DOWN"  # waiting to reconnect after a failure
    REFUSED = "REFUSED"  # bind refused for its credentials: not retried


class SmppLinkDown(Exception):
    """Nothing of the message was written: the link is not bound or went
    down first.  Retrying it cannot duplicate anything."""


class SmppSubmitError(Exception):
    """The SMSC refused the message's first part (nothing was accepted)."""

    def __init__(self, status: int, part: int = 1, parts: int = 1, permanent: bool = False):
        kind = "permanently" if permanent else "temporarily"
        super().__init__(f"SMSC refused submit_sm part {part}/{parts} {kind}: status {describe_status(status)}")
        self.status = status
        self.permanent = permanent


class SmppInvalidMessage(Exception):
    """This message can never be sent as it is (bad MSISDN, unencodable)."""


class SmppUncertain(Exception):
    """The SMSC may hold all or part of the message: never resend it blindly.
    ``message_ids`` (and ``part_times``) are the parts it did accept."""

    def __init__(self, reason: str, message_ids: list[str], parts: int, part_times=(), smsc: str | None = None):
        super().__init__(reason)
        self.message_ids = list(message_ids)
        self.parts = parts
        self.part_times = tuple(part_times)
        self.smsc = smsc


@dataclass(frozen=True)
class SubmitResult:
    message_ids: list[str]  # one per part, in part order
    parts: int
    data_coding: int
    part_times: tuple[float, ...] = ()  # when each part's submit_sm_resp came (clock seconds)
    smsc: str | None = None  # the SMSC connection that took it (SmppLinkConfig.name)


def part_fields(message: EncodedMessage, index: int) -> dict:
    """The submit_sm fields one part carries, sent as they are.

    A part is either the ``short_message`` octets (the message's esm_class
    applies), or an object that carries its own ``short_message``, and may
    carry ``esm_class`` and optional TLVs (``optional_params`` or ``tlvs``,
    a mapping of smpplib parameter names, e.g. ``sar_msg_ref_num``): the
    encoder decides how a message is split and joined, the link never
    rebuilds it.
    """
    # The message's own view of the part (sms/encoding.py: its UDH or SAR
    # TLVs included) where it offers one; bare octets otherwise.
    segments = getattr(message, "segments", ())
    part = segments[index] if segments else message.parts[index]
    if isinstance(part, (bytes, bytearray)):
        return {"short_message": bytes(part), "esm_class": message.esm_class}
    fields = {"short_message": part.short_message, "esm_class": getattr(part, "esm_class", message.esm_class)}
    for name in ("optional_params", "tlvs"):
        extra = getattr(part, name, None)
        if extra:
            fields.update(extra)
    return fields


BIND_MODES = ("transceiver", "transmitter", "receiver")


@dataclass(frozen=True)
class SmppLinkConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    # transceiver: submits and receives delivery receipts on one bind;
    # transmitter: submits only (receipts need a receiver bind beside it);
    # receiver: receipts only.
    bind_mode: str = "transceiver"
    name: str = "default"  # the SMSC connection this bind belongs to (receipts are matched within it)
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    source_addr: str = "BillGW"
    source_addr_ton: int = 5
    source_addr_npi: int = 0
    registered_delivery: int = 1  # 1: a final delivery receipt for every part
    validity_period: float = 0.0  # seconds; 0: the SMSC's default
    country: str = "JO"  # for national MSISDNs
    window: int = 10
    rate: float = 50.0  # submit_sm per second
    throttle_pause: float = 1.0  # first pause of the bind after a temporary refusal
    throttle_pause_cap: float = 30.0
    part_retries: int = 3  # in-place retries of a refused later part
    socket_timeout: float = 5.0  # TCP connect
    response_timeout: float = 10.0  # per PDU
    enquire_link_interval: float = 30.0
    enquire_link_timeout: float = 10.0
    pdu_read_timeout: float = 10.0
    max_pdu_length: int = 4096
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    reconnect_jitter: float = 0.25  # up to +25% of the delay
    stop_timeout: float = 15.0
    concatenation: str = "udh8"  # or "udh16", "sar" (sms/encoding.py)

    def __post_init__(self):
        if self.concatenation not in CONCATENATION_SCHEMES:
            raise ValueError(f"concatenation must be one of {', '.join(CONCATENATION_SCHEMES)}")
        if self.bind_mode not in BIND_MODES:
            raise ValueError(f"bind_mode must be transceiver, transmitter or receiver, not {self.bind_mode!r}")
        if self.stop_timeout <= self.response_timeout:
            raise ValueError(
                f"stop_timeout ({self.stop_timeout}s) must exceed response_timeout ({self.response_timeout}s)"
            )
        for name in ("socket_timeout", "response_timeout", "enquire_link_interval", "enquire_link_timeout",
                     "pdu_read_timeout", "reconnect_initial", "rate", "throttle_pause"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 1 <= self.window <= 1000:
            raise ValueError("window must be 1..1000")
        if self.max_pdu_length < 64:
            raise ValueError("max_pdu_length must be at least 64")


def relative_validity(seconds: float) -> str:
    """SMPP 3.4 relative time format (§7.1.1): ``YYMMDDhhmmss000R``."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    return f"{min(years, 99):02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


@dataclass(eq=False)
class _Job:
    destination: Destination
    message: EncodedMessage
    deferred: defer.Deferred = field(repr=False)
    next_part: int = 0  # index of the part to write next
    message_ids: list[str] = field(default_factory=list)
    part_times: list[float] = field(default_factory=list)
    retries_left: int = 0
    cancelled: bool = False


class SmppLink(Service):
    """See the module docstring.  ``connect(factory)`` (tests) replaces the
    TCP endpoint; ``random`` draws the jitter and the first UDH reference."""

    def __init__(self, reactor, config: SmppLinkConfig, *, logger=None, status_table: StatusTable | None = None,
                 connect=None, random=random.random):
        self._reactor = reactor
        self.config = config
        self.status_table = status_table or load_status_table()
        self._log = (logger or structlog.get_logger()).bind(
            smsc=f"{config.host}:{config.port}", system_id=config.system_id, smsc_name=config.name,
            bind_mode=config.bind_mode,
        )
        self._connect = connect or self._connect_tcp
        self._random = random
        self.state = LinkState.STOPPED
        self.last_bind_status: int | None = None
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed connects/binds
        self.pacer = Pacer(config.rate, pause_base=config.throttle_pause, pause_cap=config.throttle_pause_cap)
        self._protocol: SmppClientProtocol | None = None
        self._ready: collections.deque[_Job] = collections.deque()
        self._in_flight = 0
        self._pump_timer = None
        self._reconnect_timer = None
        self._references = ReferenceCounter(REFERENCE_MODULUS[config.concatenation])
        self._state_waiters: list[tuple[frozenset, defer.Deferred]] = []
        self._stopping = False
        # Called with (deliver_sm PDU, SMSC name) after it was answered; set
        # by whoever handles delivery receipts (the sender's recorder).
        self.on_deliver = None

    # ------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.state is LinkState.BOUND

    @property
    def window(self) -> int:
        return self.config.window

    @property
    def transmits(self) -> bool:
        """False for a receiver bind: it takes no submits."""
        return self.config.bind_mode != "receiver"

    @property
    def free(self) -> int:
        """Window slots not taken by messages in flight or queued here."""
        return self.config.window - self._in_flight - len(self._ready)

    def health(self) -> dict:
        """What an operator (or a health endpoint) needs to see."""
        return {"state": self.state.value, "last_bind_status": self.last_bind_status,
                "last_error": self.last_error, "failures": self.failures,
                "in_flight": self._in_flight, "queued": len(self._ready),
                "paused_for": round(self.pacer.delay(self._reactor.seconds()), 3)}

    def wait_for_state(self, *states: LinkState) -> defer.Deferred:
        """Fires with the state once the link is in one of ``states``.
        The caller applies a timeout."""
        d = defer.Deferred()
        if self.state in states:
            d.callback(self.state)
        else:
            self._state_waiters.append((frozenset(states), d))
        return d

    def _set_state(self, state: LinkState) -> None:
        self.state = state
        for waiter in [w for w in self._state_waiters if state in w[0]]:
            self._state_waiters.remove(waiter)
            if not waiter[1].called:
                waiter[1].callback(state)

    # ------------------------------------------------------------------
    def startService(self):
        super().startService()
        route_smpplib_logging()
        self._stopping = False
        self._open()

    def stopService(self):
        """Fail what is queued, unbind, close; bounded by ``stop_timeout``."""
        super().stopService()
        self._stopping = True
        if self._reconnect_timer is not None and self._reconnect_timer.active():
            self._reconnect_timer.cancel()
        self._reconnect_timer = None
        self._fail_ready(lambda job: self._unwritten_or_partial(job, "SMPP link stopped"))
        proto = self._protocol
        if proto is None:
            self._set_state(LinkState.STOPPED)
            return defer.succeed(None)
        d = proto.unbind(self.config.response_timeout)
        d.addTimeout(self.config.stop_timeout, self._reactor)

        def timed_out(f):
            f.trap(defer.TimeoutError)
            self._log.error("smpp.stop_timeout", timeout=self.config.stop_timeout)
            if proto.transport is not None:
                proto.transport.abortConnection()

        d.addErrback(timed_out)
        d.addBoth(lambda _: self._set_state(LinkState.STOPPED))
        return d

    def _connect_tcp(self, factory) -> defer.Deferred:
        endpoint = endpoints.TCP4ClientEndpoint(self._reactor, self.config.host, self.config.port,
                                                timeout=self.config.socket_timeout)
        return endpoint.connect(factory)

    def _open(self) -> None:
        self._reconnect_timer = None
        if self._stopping:
            return
        self._set_state(LinkState.CONNECTING)
        cfg = self.config
        proto = SmppClientProtocol(
            clock=self._reactor, bind_mode=cfg.bind_mode, system_id=cfg.system_id, password=cfg.password,
            system_type=cfg.system_type, addr_ton=cfg.addr_ton, addr_npi=cfg.addr_npi,
            address_range=cfg.address_range, response_timeout=cfg.response_timeout,
            enquire_link_interval=cfg.enquire_link_interval, enquire_link_timeout=cfg.enquire_link_timeout,
            pdu_read_timeout=cfg.pdu_read_timeout, max_pdu_length=cfg.max_pdu_length,
            log=self._log, on_deliver=self._delivered,
        )
        factory = _OneProtocolFactory(proto)
        d = defer.maybeDeferred(self._connect, factory)
        d.addCallbacks(lambda _: self._connected(proto), self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        self.last_error = f"cannot connect: {failure.getErrorMessage()}"
        self._log.warning("smpp.connect_failed", error=self.last_error)
        self._down()

    def _connected(self, proto: SmppClientProtocol) -> None:
        self._protocol = proto
        proto.lost.addCallback(self._lost, proto)
        proto.bound.addCallbacks(self._bound, self._bind_failed, errbackArgs=(proto,))

    def _bound(self, _smsc_id) -> None:
        if self._stopping:
            return
        self.failures = 0  # a good bind resets the back-off
        self.last_bind_status = 0
        self.last_error = None
        self._set_state(LinkState.BOUND)
        self._log.info("smpp.bound", mode=self.config.bind_mode)
        self._pump()

    def _bind_failed(self, failure: Failure, proto) -> None:
        exc = failure.value
        if isinstance(exc, BindRefused):
            self.last_bind_status = exc.status
            self.last_error = str(exc)
            if exc.credentials:
                self._log.error("smpp.bind_refused", status=exc.status, error=str(exc),
                                action="not retried: fix the credentials and restart")
                self._refused = True
                return
            self._log.warning("smpp.bind_failed", status=exc.status, error=str(exc))
        else:
            self.last_error = f"bind failed: {exc}"
            self._log.warning("smpp.bind_failed", error=self.last_error)

    _refused = False

    def _lost(self, reason: str, proto) -> None:
        was_bound = self.state is LinkState.BOUND
        self._protocol = None
        self._fail_ready(lambda job: self._unwritten_or_partial(job, f"SMPP link lost: {reason}"))
        if self._stopping:
            return
        if self._refused:
            self._set_state(LinkState.REFUSED)
            return
        if was_bound:
            self.last_error = reason
            self._log.warning("smpp.link_lost", reason=reason)
        self._down()

    def _down(self) -> None:
        if self._stopping:
            return
        self.failures += 1
        self._set_state(LinkState.DOWN)
        delay = exponential_backoff(self.failures, self.config.reconnect_initial, self.config.reconnect_max)
        delay *= 1 + self.config.reconnect_jitter * self._random()
        self._log.info("smpp.rebind_wait", delay=round(delay, 3), failures=self.failures)
        self._reconnect_timer = self._reactor.callLater(delay, self._open)

    # ------------------------------------------------------------------
    def submit(self, destination: str, text_: str) -> defer.Deferred:
        """Send one message; fires with :class:`SubmitResult` or fails with one
        of the errors above (never anything else, short of a bug).  No timeout
        is needed on top: every part has its own response timer."""
        if not self.transmits:
            return defer.fail(SmppLinkDown("a receiver bind takes no submits"))
        if self.state is not LinkState.BOUND:
            return defer.fail(SmppLinkDown(self._down_reason()))
        try:
            dest = normalise_msisdn(destination, self.config.country)
            reference = self._references.next(dest.address, self._reactor.seconds())
            message = split_message(text_, reference=reference, scheme=self.config.concatenation)
        except (InvalidMsisdn, MessageTooLong) as e:
            return defer.fail(SmppInvalidMessage(str(e)))
        except Exception as e:  # the text itself cannot be encoded
            return defer.fail(SmppInvalidMessage(f"cannot encode the message: {type(e).__name__}"))

        def cancel(_d):
            job.cancelled = True

        job = _Job(dest, message, defer.Deferred(canceller=cancel), retries_left=self.config.part_retries)
        self._ready.append(job)
        self._pump()
        return job.deferred

    def _down_reason(self) -> str:
        reason = f"SMPP link {self.state.value}"
        if self.last_bind_status:
            reason += f"; bind refused with status {describe_status(self.last_bind_status)}"
        elif self.last_error:
            reason += f"; {self.last_error}"
        return reason

    def _pump(self) -> None:
        """Write what the window and the pacer allow; reschedule for the rest."""
        if self._pump_timer is not None:
            if self._pump_timer.active():
                return  # a paced pump is already due
            self._pump_timer = None
        proto = self._protocol
        while self._ready and self.state is LinkState.BOUND and proto is not None and proto.is_bound:
            if self._in_flight >= self.config.window:
                return  # a response will call us again
            wait = self.pacer.delay(self._reactor.seconds())
            if wait > 0:
                self._pump_timer = self._reactor.callLater(wait, self._pump)
                return
            job = self._ready.popleft()
            if job.cancelled and job.next_part == 0:
                continue
            self._write(proto, job)

    def _write(self, proto: SmppClientProtocol, job: _Job) -> None:
        cfg = self.config
        message = job.message
        fields = dict(
            source_addr_ton=cfg.source_addr_ton, source_addr_npi=cfg.source_addr_npi, source_addr=cfg.source_addr,
            dest_addr_ton=job.destination.ton, dest_addr_npi=job.destination.npi,
            destination_addr=job.destination.address,
            data_coding=message.data_coding, registered_delivery=cfg.registered_delivery,
        )
        if cfg.validity_period:
            fields["validity_period"] = relative_validity(cfg.validity_period)
        try:
            fields.update(part_fields(message, job.next_part))
            pdu = smpp.make_pdu("submit_sm", client=proto, **fields)
            d = proto.request(pdu, cfg.response_timeout)
        except Exception as e:  # nothing was written: this row alone fails
            self._log.warning("smpp.unencodable_submit", error=type(e).__name__, part=job.next_part + 1)
            if job.next_part == 0:
                self._finish(job, SmppInvalidMessage(f"cannot encode submit_sm: {type(e).__name__}"))
            else:
                self._finish(job, self._partial(job, f"part {job.next_part + 1} cannot be encoded"))
            return
        self.pacer.take(self._reactor.seconds())
        self._in_flight += 1
        d.addCallbacks(self._answered, self._unanswered, callbackArgs=(job,), errbackArgs=(job,))

    def _answered(self, resp, job: _Job) -> None:
        self._in_flight -= 1
        part, parts = job.next_part + 1, len(job.message.parts)
        status = resp.status
        if resp.command == "generic_nack" and status == 0:
            status = 0x08  # a nack that claims success is still not an answer to submit_sm
        if status == 0:
            self.pacer.accepted()
            job.message_ids.append(text(getattr(resp, "message_id", "")))
            job.part_times.append(self._reactor.seconds())
            job.next_part += 1
            if job.next_part == parts:
                self._finish(job, SubmitResult(job.message_ids, parts, job.message.data_coding,
                                               tuple(job.part_times), self.config.name))
            else:
                self._ready.appendleft(job)  # the next part goes before new messages
        else:
            permanent = self.status_table.is_permanent(status)
            if not permanent:
                pause = self.pacer.refused(self._reactor.seconds())
                self._log.warning("smpp.submit_refused", status=describe_status(status), part=part,
                                  pause=round(pause, 3))
            else:
                self._log.warning("smpp.submit_refused", status=describe_status(status), part=part,
                                  permanent=True)
            if job.next_part == 0:
                self._finish(job, SmppSubmitError(status, part, parts, permanent=permanent))
            elif not permanent and job.retries_left > 0:
                job.retries_left -= 1
                self._ready.appendleft(job)  # same part, same UDH reference, after the pause
            else:
                self._finish(job, self._partial(job, f"part {part}/{parts} refused: status {describe_status(status)}"))
        self._pump()

    def _unanswered(self, failure: Failure, job: _Job) -> None:
        self._in_flight -= 1
        part, parts = job.next_part + 1, len(job.message.parts)
        if failure.check(ResponseTimeout, SessionLost):
            reason = f"part {part}/{parts} written, no answer: {failure.getErrorMessage()}"
        else:
            reason = f"part {part}/{parts} written, then {failure.getErrorMessage()}"
        self._finish(job, SmppUncertain(reason, job.message_ids, parts, job.part_times, self.config.name))
        self._pump()

    def _partial(self, job: _Job, reason: str) -> SmppUncertain:
        accepted = len(job.message_ids)
        return SmppUncertain(f"{accepted} of {len(job.message.parts)} parts accepted; {reason}",
                             job.message_ids, len(job.message.parts), job.part_times, self.config.name)

    def _unwritten_or_partial(self, job: _Job, reason: str) -> Exception:
        return SmppLinkDown(reason) if job.next_part == 0 else self._partial(job, reason)

    def _fail_ready(self, make_error) -> None:
        jobs, self._ready = list(self._ready), collections.deque()
        for job in jobs:
            self._finish(job, make_error(job))

    def _finish(self, job: _Job, result) -> None:
        if job.deferred.called:
            return
        if isinstance(result, BaseException):
            job.deferred.errback(Failure(result))
        else:
            job.deferred.callback(result)

    def _delivered(self, pdu) -> None:
        handler = self.on_deliver
        if handler is None:
            self._log.info("smpp.deliver_sm", receipted_message_id=text(getattr(pdu, "receipted_message_id", "")))
        else:
            handler(pdu, self.config.name)


class _OneProtocolFactory:
    """An IProtocolFactory that hands out one prepared protocol."""

    def __init__(self, proto):
        self._proto = proto

    def buildProtocol(self, addr):
        self._proto.factory = self
        return self._proto

    def doStart(self):
        pass

    def doStop(self):
        pass

    def startedConnecting(self, connector):
        pass

    def clientConnectionFailed(self, connector, reason):
        pass

    def clientConnectionLost(self, connector, reason):
        pass
