"""The SMPP link: one bind kept up, a window of submits, a pacer, one answer per message.

:class:`SmppLink` is a Service around :class:`~billgw.sms.smpp_client.SmppClientProtocol`
(the session, on the reactor).  It keeps the bind up and hands each message
to its :class:`~billgw.sms.submit_window.SubmitWindow`; its settings are
:class:`~billgw.sms.smpp_link_config.SmppLinkConfig` and its answers the
classes of :mod:`billgw.sms.smpp_outcomes` (all importable from here too).
The policy:

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

import enum
import random

import structlog
from twisted.application.service import Service
from twisted.internet import defer, endpoints
from twisted.python.failure import Failure

from billgw.sms.backoff import exponential_backoff
from billgw.sms.encoding import REFERENCE_MODULUS, MessageTooLong, ReferenceCounter, split_message
from billgw.sms.msisdn import InvalidMsisdn, normalise_msisdn
from billgw.sms.smpp_client import BindRefused, SmppClientProtocol, describe_status, text
from billgw.sms.smpp_link_config import BIND_MODES, SmppLinkConfig, relative_validity
from billgw.sms.smpp_outcomes import (
    SmppInvalidMessage,
    SmppLinkDown,
    SmppSubmitError,
    SmppUncertain,
    SubmitResult,
)
from billgw.sms.smpplib_logging import route_smpplib_logging
from billgw.sms.status_table import StatusTable, load_status_table
from billgw.sms.submit_window import SubmitJob, SubmitWindow, part_fields

# Importable from here, as before the window, the settings and the outcomes
# had modules of their own.
__all__ = [
    "BIND_MODES", "LinkState", "SmppInvalidMessage", "SmppLink", "SmppLinkConfig", "SmppLinkDown",
    "SmppSubmitError", "SmppUncertain", "SubmitResult", "part_fields", "relative_validity",
]


class LinkState(enum.Enum):
    STOPPED = "STOPPED"
    CONNECTING = "CONNECTING"
    BOUND = "BOUND"
    DOWN = "DOWN"  # waiting to reconnect after a failure
    REFUSED = "REFUSED"  # bind refused for its credentials: not retried



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
        self._protocol: SmppClientProtocol | None = None
        self._window = SubmitWindow(reactor, config, status_table=self.status_table, log=self._log,
                                    session=self._bound_session)
        self.pacer = self._window.pacer
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
        return self._window.free

    def _bound_session(self) -> SmppClientProtocol | None:
        return self._protocol if self.state is LinkState.BOUND else None

    def health(self) -> dict:
        """What an operator (or a health endpoint) needs to see."""
        return {"state": self.state.value, "last_bind_status": self.last_bind_status,
                "last_error": self.last_error, "failures": self.failures,
                "in_flight": self._window.in_flight, "queued": self._window.queued,
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
        self._window.fail_all("SMPP link stopped")
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
        self._window.pump()

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
        self._window.fail_all(f"SMPP link lost: {reason}")
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

        job = SubmitJob(dest, message, defer.Deferred(canceller=cancel), retries_left=self.config.part_retries)
        self._window.add(job)
        return job.deferred

    def _down_reason(self) -> str:
        reason = f"SMPP link {self.state.value}"
        if self.last_bind_status:
            reason += f"; bind refused with status {describe_status(self.last_bind_status)}"
        elif self.last_error:
            reason += f"; {self.last_error}"
        return reason

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
