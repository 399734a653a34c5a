"""The SMPP 3.4 client link: one blocking smpplib Client, one dedicated thread.

Why a thread of its own: smpplib is blocking, and an SMPP bind is a session
with per-connection sequence numbers and state; sharing a Client between
threads (or running it on the reactor's shared pool, which also resolves host
names) would interleave PDUs.  So exactly one thread, started by
``startService``, owns the Client from connect to disconnect, and the reactor
talks to it through a queue and a wake-up socket pair:

* reactor → thread: :meth:`SmppLink.submit` encodes the text (pure), queues a
  job and pokes the wake-up socket;
* thread → reactor: every result, failure and state change crosses back with
  ``reactor.callFromThread``; nothing else of the link is touched from the
  thread.

The thread sends one submit_sm at a time and waits for its submit_sm_resp
(receipts run at a few per second; a window of one keeps the code obviously
correct).  Every socket operation has a timeout: the socket's own timeout for
connect/bind/unbind and a ``select`` deadline for each awaited response.  A
response that does not come in time, a closed socket or an unbind from the
SMSC breaks the session: the job in flight and all queued jobs fail with
:class:`SmppLinkDown` (the outbox retries them) and the thread rebinds after a
capped exponential back-off.
"""
from __future__ import annotations

import enum
import itertools
import queue
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import structlog
from smpplib import smpp
from twisted.application.service import Service
from twisted.internet import defer
from twisted.python.failure import Failure

from billgw.sms.backoff import exponential_backoff
from billgw.sms.encoding import EncodedMessage, split_message


class LinkState(enum.Enum):
    STOPPED = "STOPPED"
    CONNECTING = "CONNECTING"
    BOUND = "BOUND"
    DOWN = "DOWN"  # waiting to reconnect after a failure


def describe_status(status: int) -> str:
    name = smpplib.consts.DESCRIPTIONS.get(status, "unknown status")
    return f"0x{status:08X} ({name})"


class SmppLinkDown(Exception):
    """The link is not bound, or broke before the SMSC answered: retry later."""


class SmppSubmitError(Exception):
    """The SMSC answered submit_sm with a non-zero command_status."""

    def __init__(self, status: int, part: int = 1, parts: int = 1):
        super().__init__(f"SMSC refused submit_sm part {part}/{parts}: status {describe_status(status)}")
        self.status = status


@dataclass(frozen=True)
class SubmitResult:
    message_ids: list[str]  # one per part, in part order
    parts: int
    data_coding: int


@dataclass(frozen=True)
class SmppLinkConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    bind_mode: str = "transceiver"  # or "transmitter"
    # The ESME address given at bind time.
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    # Sender of the receipts: alphanumeric (TON 5) "BillGW" by default.
    source_addr: str = "BillGW"
    source_addr_ton: int = 5
    source_addr_npi: int = 0
    dest_addr_ton: int = 1  # international
    dest_addr_npi: int = 1  # E.164
    registered_delivery: int = 0
    socket_timeout: float = 5.0
    response_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    stop_timeout: float = 15.0

    def __post_init__(self):
        if self.bind_mode not in ("transceiver", "transmitter"):
            raise ValueError(f"bind_mode must be transceiver or transmitter, not {self.bind_mode!r}")
        # Stopping may wait for a connect or bind and then an unbind, each
        # bounded by the socket timeout; the stop bound must cover both.
        if self.stop_timeout <= 2 * self.socket_timeout:
            raise ValueError(
                f"stop_timeout ({self.stop_timeout}s) must exceed twice socket_timeout ({self.socket_timeout}s)"
            )
        for name in ("socket_timeout", "response_timeout", "enquire_link_interval", "reconnect_initial"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass
class _Job:
    destination: str
    message: EncodedMessage
    deferred: defer.Deferred = field(repr=False, default=None)
    cancelled: bool = False


class _LinkBroken(Exception):
    """Internal to the thread: the session cannot continue."""


def _fire(d: defer.Deferred, result) -> None:
    # The Deferred may have been cancelled (timeout) while the thread worked.
    if d.called:
        return
    if isinstance(result, BaseException):
        d.errback(Failure(result))
    else:
        d.callback(result)


def _text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


class SmppLink(Service):
    """An ESME bind kept up by one thread; see the module docstring."""

    def __init__(self, reactor, config: SmppLinkConfig, *, logger=None, monotonic=time.monotonic):
        self._reactor = reactor
        self.config = config
        self._log = (logger or structlog.get_logger()).bind(
            smsc=f"{config.host}:{config.port}", system_id=config.system_id
        )
        self._monotonic = monotonic
        self.state = LinkState.STOPPED
        self.last_bind_status: int | None = None
        self.last_error: str | None = None
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_done: defer.Deferred | None = None
        self._wake_r = self._wake_w = None
        self._references = itertools.count(1)
        self._state_waiters: list[tuple[frozenset, defer.Deferred]] = []

    # ------------------------------------------------------------------
    # Reactor side
    # ------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.state is LinkState.BOUND

    def startService(self):
        super().startService()
        self._stopping.clear()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread_done = defer.Deferred()
        self._set_state(LinkState.CONNECTING, None, None)
        self._thread = threading.Thread(
            target=self._run, name=f"smpp-{self.config.system_id}@{self.config.host}:{self.config.port}", daemon=True
        )
        self._thread.start()

    def stopService(self):
        """Unbind and wait for the thread to end, at most ``stop_timeout``."""
        super().stopService()
        if self._thread is None:
            return defer.succeed(None)
        self._stopping.set()
        self._poke()
        d = defer.Deferred()
        self._thread_done.addBoth(lambda _: _fire(d, None))

        def timed_out(f):
            f.trap(defer.TimeoutError)
            self._log.error("smpp.stop_timeout", timeout=self.config.stop_timeout)

        d.addTimeout(self.config.stop_timeout, self._reactor)
        d.addErrback(timed_out)
        return d

    def submit(self, destination: str, text: str) -> defer.Deferred:
        """Send ``text`` to ``destination``; fires with a :class:`SubmitResult`,
        or fails with SmppLinkDown / SmppSubmitError.  Apply your own timeout:
        cancelling only drops the result (parts already sent stay sent)."""
        if self.state is not LinkState.BOUND:
            return defer.fail(SmppLinkDown(self._down_reason()))
        message = split_message(text, reference=next(self._references) & 0xFF)
        job = _Job(destination, message)

        def cancel(_d):
            job.cancelled = True

        job.deferred = defer.Deferred(canceller=cancel)
        self._jobs.put(job)
        self._poke()
        return job.deferred

    def wait_for_state(self, *states: LinkState) -> defer.Deferred:
        """Fires with the state once the link is in one of ``states``.
        The caller applies a timeout."""
        d = defer.Deferred()
        if self.state in states:
            d.callback(self.state)
        else:
            self._state_waiters.append((frozenset(states), d))
        return d

    def _down_reason(self) -> str:
        reason = f"SMPP link {self.state.value}"
        if self.last_bind_status:
            reason += f"; bind refused with status {describe_status(self.last_bind_status)}"
        elif self.last_error:
            reason += f"; {self.last_error}"
        return reason

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"!")
        except (BlockingIOError, OSError):
            pass  # already poked (buffer full) or closed while stopping

    def _set_state(self, state: LinkState, bind_status: int | None, error: str | None) -> None:
        self.state = state
        if bind_status is not None:
            self.last_bind_status = bind_status
        if error is not None:
            self.last_error = error
        for waiter in [w for w in self._state_waiters if state in w[0]]:
            self._state_waiters.remove(waiter)
            _fire(waiter[1], state)

    def _thread_finished(self) -> None:
        self._set_state(LinkState.STOPPED, None, None)
        self._fail_queued(SmppLinkDown("SMPP link stopped"), on_reactor=True)
        # The thread's last statement scheduled this call, so it is returning
        # now: the join is immediate in practice and bounded in any case.
        self._thread.join(timeout=0.5)
        if self._thread.is_alive():
            self._log.error("smpp.thread_not_joined")
        self._thread = None
        self._wake_r.close()
        self._wake_w.close()
        _fire(self._thread_done, None)

    # ------------------------------------------------------------------
    # Thread side: nothing below runs on the reactor thread.
    # ------------------------------------------------------------------
    def _publish(self, state: LinkState, bind_status: int | None = None, error: str | None = None) -> None:
        self._reactor.callFromThread(self._set_state, state, bind_status, error)

    def _deliver(self, job: _Job, result) -> None:
        self._reactor.callFromThread(_fire, job.deferred, result)

    def _fail_queued(self, error: Exception, on_reactor: bool = False) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if on_reactor:
                _fire(job.deferred, error)
            else:
                self._deliver(job, error)

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                self._publish(LinkState.CONNECTING)
                client = self._open()
                if client is not None:
                    started = self._monotonic()
                    self._publish(LinkState.BOUND, bind_status=0)
                    self._log.info("smpp.bound", mode=self.config.bind_mode)
                    reason = self._session(client)
                    self._close(client, unbind=self._stopping.is_set())
                    if self._stopping.is_set():
                        break
                    self._log.warning("smpp.link_lost", reason=reason)
                    self._publish(LinkState.DOWN, error=reason)
                    if self._monotonic() - started >= self.config.reconnect_max:
                        failures = 0  # it was a healthy session: start over
                failures += 1
                self._fail_queued(SmppLinkDown(f"SMPP link down; rebinding (attempt {failures})"))
                delay = exponential_backoff(failures, self.config.reconnect_initial, self.config.reconnect_max)
                self._log.info("smpp.rebind_wait", delay=delay, failures=failures)
                self._idle_wait(delay)
        except Exception:
            self._log.exception("smpp.thread_crashed")
        finally:
            self._fail_queued(SmppLinkDown("SMPP link stopped"))
            self._reactor.callFromThread(self._thread_finished)

    def _idle_wait(self, delay: float) -> None:
        """Sleep ``delay`` while failing whatever gets submitted meanwhile,
        so that nobody waits on a link that is down; wake early on stop."""
        deadline = self._monotonic() + delay
        while not self._stopping.is_set():
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return
            readable, _, _ = select.select([self._wake_r], [], [], remaining)
            if readable:
                self._drain_wake()
                self._fail_queued(SmppLinkDown("SMPP link down; rebinding"))

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, OSError):
            pass

    def _open(self):
        cfg = self.config
        client = smpplib.client.Client(
            cfg.host,
            cfg.port,
            timeout=cfg.socket_timeout,
            allow_unknown_opt_params=True,
            logger_name="billgw.sms.smpplib",
        )
        bind = client.bind_transceiver if cfg.bind_mode == "transceiver" else client.bind_transmitter
        try:
            client.connect()
            bind(
                system_id=cfg.system_id,
                password=cfg.password,
                system_type=cfg.system_type,
                addr_ton=cfg.addr_ton,
                addr_npi=cfg.addr_npi,
                address_range=cfg.address_range,
            )
        except smpplib.exceptions.PDUError as e:
            status = e.args[1] if len(e.args) > 1 else None
            error = f"bind refused: status {describe_status(status)}" if status is not None else f"bind failed: {e}"
            self._log.error("smpp.bind_refused", status=status, error=error)
            self._publish(LinkState.DOWN, bind_status=status, error=error)
            self._close(client)
            return None
        except (smpplib.exceptions.ConnectionError, OSError) as e:
            error = f"cannot connect/bind: {e or type(e).__name__}"
            self._log.warning("smpp.connect_failed", error=error)
            self._publish(LinkState.DOWN, error=error)
            self._close(client)
            return None
        return client

    def _close(self, client, unbind: bool = False) -> None:
        if unbind:
            try:
                client.unbind()  # bounded by the socket timeout
            except Exception as e:
                self._log.info("smpp.unbind_failed", error=str(e))
        try:
            client.disconnect()
        except Exception:
            pass

    def _session(self, client) -> str:
        """Serve one bind until it breaks or we stop; returns why it ended."""
        interval = self.config.enquire_link_interval
        last_activity = self._monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    job = None
                if job is not None:
                    self._submit(client, job)
                    last_activity = self._monotonic()
                    continue
                idle = self._monotonic() - last_activity
                if idle >= interval:
                    self._request(client, smpp.make_pdu("enquire_link", client=client), "enquire_link_resp")
                    last_activity = self._monotonic()
                    continue
                readable, _, _ = select.select([client._socket, self._wake_r], [], [], interval - idle)
                if self._wake_r in readable:
                    self._drain_wake()
                if client._socket in readable:
                    self._handle_unsolicited(client, self._read(client))
                    last_activity = self._monotonic()
            return "stopped"
        except _LinkBroken as e:
            return str(e)
        except Exception as e:  # a bug or an smpplib surprise: log it, rebind
            self._log.exception("smpp.session_error")
            return f"unexpected error: {e!r}"

    def _submit(self, client, job: _Job) -> None:
        if job.cancelled:
            return
        cfg = self.config
        message = job.message
        ids = []
        try:
            for index, part in enumerate(message.parts, start=1):
                pdu = smpp.make_pdu(
                    "submit_sm",
                    client=client,
                    source_addr_ton=cfg.source_addr_ton,
                    source_addr_npi=cfg.source_addr_npi,
                    source_addr=cfg.source_addr,
                    dest_addr_ton=cfg.dest_addr_ton,
                    dest_addr_npi=cfg.dest_addr_npi,
                    destination_addr=job.destination,
                    esm_class=message.esm_class,
                    data_coding=message.data_coding,
                    registered_delivery=cfg.registered_delivery,
                    short_message=part,
                )
                resp = self._request(client, pdu, "submit_sm_resp")
                if resp.status != smpplib.consts.SMPP_ESME_ROK:
                    self._log.warning("smpp.submit_refused", status=describe_status(resp.status), part=index)
                    self._deliver(job, SmppSubmitError(resp.status, index, len(message.parts)))
                    return
                ids.append(_text(getattr(resp, "message_id", "")))
        except _LinkBroken as e:
            # DOWN first, so whoever handles the failure already sees the
            # link as not bound (callFromThread keeps the order).
            self._publish(LinkState.DOWN, error=str(e))
            self._deliver(job, SmppLinkDown(f"SMPP link broke during submit: {e}"))
            raise
        self._deliver(job, SubmitResult(ids, len(message.parts), message.data_coding))

    def _send(self, client, pdu) -> None:
        try:
            client.send_pdu(pdu)
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as e:
            raise _LinkBroken(f"cannot send {pdu.command}: {e or type(e).__name__}") from None

    def _read(self, client):
        try:
            return client.read_pdu()
        except socket.timeout:
            raise _LinkBroken("SMSC stopped in the middle of a PDU") from None
        except (smpplib.exceptions.ConnectionError, OSError):
            raise _LinkBroken("connection closed by the SMSC") from None
        except Exception as e:  # unknown command id, malformed PDU
            raise _LinkBroken(f"unreadable PDU from the SMSC: {e!r}") from None

    def _request(self, client, pdu, response_command: str):
        """Send ``pdu`` and return its response, serving other PDUs meanwhile."""
        self._send(client, pdu)
        timeout = self.config.response_timeout
        deadline = self._monotonic() + timeout
        while True:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise _LinkBroken(f"no {response_command} within {timeout}s")
            readable, _, _ = select.select([client._socket, self._wake_r], [], [], remaining)
            if self._wake_r in readable:
                self._drain_wake()
                if self._stopping.is_set():
                    raise _LinkBroken("stopping")
            if client._socket not in readable:
                continue
            resp = self._read(client)
            if resp.sequence == pdu.sequence and resp.command in (response_command, "generic_nack"):
                return resp
            self._handle_unsolicited(client, resp)

    def _handle_unsolicited(self, client, pdu) -> None:
        command = pdu.command
        if command == "enquire_link":
            resp = smpp.make_pdu("enquire_link_resp", client=client)
            resp.sequence = pdu.sequence
            self._send(client, resp)
        elif command == "deliver_sm":
            # Delivery receipts (DELIVERED state) are not tracked yet; answer
            # so that the SMSC does not redeliver.
            resp = smpp.make_pdu("deliver_sm_resp", client=client)
            resp.sequence = pdu.sequence
            self._send(client, resp)
            self._log.info("smpp.deliver_sm", receipted_message_id=_text(getattr(pdu, "receipted_message_id", "")))
        elif command == "unbind":
            resp = smpp.make_pdu("unbind_resp", client=client)
            resp.sequence = pdu.sequence
            self._send(client, resp)
            raise _LinkBroken("SMSC unbound")
        elif command in ("enquire_link_resp", "deliver_sm_resp"):
            pass
        else:
            self._log.warning("smpp.unexpected_pdu", command=command, sequence=pdu.sequence, status=pdu.status)
