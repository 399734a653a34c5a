"""Records over one persistent TCP link to a host: framing, sign-on,
heartbeats, sequence numbers and the meaning of every ending for the money.

A mainframe biller (or its front-end processor) keeps one TCP connection
open; the client signs on first, sends heartbeats on an interval, and puts
several requests on the link at once, each carrying a sequence number its
answer echoes.  This module knows nothing of the records' contents: a
:class:`LinkDialect` (the adapter's) builds the sign-on and heartbeat
records, reads a record's sequence number and judges the sign-on answer.

- :class:`~.record_framing.RecordFramer` -- sans-IO framing: a binary
  length prefix (2 or 4 bytes, big-endian, not counting itself) or
  fixed-length records; a record longer than ``max_record`` is refused both
  ways.
- :class:`RecordLink` -- the link as a service: a
  ``twisted.application.internet.ClientService`` keeps it up with back-off on
  the injected clock; each new connection signs on before it is used;
  heartbeats declare it dead when one goes unanswered.

What :meth:`RecordLink.request` fails with, by what it means for the money:

| What happened | Outcome |
|---|---|
| no signed-on link, the record could not be built or is too long | ``BillerUnavailable``: never sent |
| no answer within the request timeout | ``BillerOutcomeUnknown`` |
| the link was lost (or declared dead) with the request on it | ``BillerOutcomeUnknown`` |
| a record whose header cannot be read (the link is dropped) | ``BillerOutcomeUnknown`` for every request on it |
| the caller cancelled | ``CancelledError``; an answer arriving later is ignored |

The answer itself is handed back as bytes: whether it says "refused"
(``BillerDeclined``) or is garbage in its body is the adapter's reading.
Requests are never resent here.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable, Protocol as TypingProtocol

import structlog
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from billgw.billing_adapters.interface import BillerHealth, BillerOutcomeUnknown, BillerUnavailable, HealthState

from .record_framing import DEFAULT_MAX_RECORD, FRAMINGS, FramingError, RecordFramer

__all__ = ["FRAMINGS", "FramingError", "LinkDialect", "LinkSettings", "RecordFramer", "RecordLink",
           "RecordLinkProtocol"]

class LinkDialect(TypingProtocol):
    """What the link needs to know of the records (the adapter supplies it)."""

    def sign_on(self, sequence: int) -> bytes:
        """The sign-on record."""

    def sign_on_refusal(self, answer: bytes) -> str | None:
        """None when the answer accepts the sign-on, else why it refused."""

    def heartbeat(self, sequence: int, now: _dt.datetime) -> bytes:
        """A heartbeat record (any answer of its sequence number is life)."""

    def sequence_of(self, record: bytes) -> int:
        """The sequence number of a record; ValueError when unreadable."""

    def unsolicited(self, record: bytes) -> bytes | None:
        """The answer to a record the host sent of its own accord (its own
        heartbeat, say), or None when the record is not such a request."""


@dataclass(frozen=True)
class LinkSettings:
    framing: str = "length2"
    record_length: int | None = None  # fixed framing
    max_record: int = DEFAULT_MAX_RECORD
    max_sequence: int = 999_999
    request_timeout: float = 15.0  # seconds a request waits for its answer
    sign_on_timeout: float = 10.0
    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    start_wait: float = 5.0  # start() fires once signed on, or after this long (then keeps trying)


class _Pending:
    __slots__ = ("deferred", "timer", "kind")

    def __init__(self, deferred: Deferred, timer, kind: str):
        self.deferred, self.timer, self.kind = deferred, timer, kind


class RecordLinkProtocol(Protocol):
    """One connection: sign-on, heartbeats, answers matched by sequence."""

    def __init__(self, link: "RecordLink"):
        self.link = link
        self.framer = RecordFramer(link.settings.framing, record_length=link.settings.record_length,
                                   max_record=link.settings.max_record)
        self.pending: dict[int, _Pending] = {}
        self.signed_on = False
        self.lost = False
        self._heartbeat: LoopingCall | None = None
        self._log = link.log

    # --- Twisted's side --------------------------------------------------------

    def connectionMade(self):
        self._log.info("record_link_connected", peer=str(self.transport.getPeer()))
        d = self.send("sign-on", self.link.dialect.sign_on, self.link.settings.sign_on_timeout)
        d.addCallbacks(self._signed_on_answer, self._sign_on_failed)
        d.addErrback(lambda f: None)

    def _signed_on_answer(self, answer: bytes) -> None:
        refusal = self.link.dialect.sign_on_refusal(answer)
        if refusal is not None:
            self._log.error("record_link_sign_on_refused", reason=refusal)
            self._sign_on_failed(Failure(BillerUnavailable(f"sign-on refused: {refusal}")))
            return
        self.signed_on = True
        self._log.info("record_link_signed_on")
        interval = self.link.settings.heartbeat_interval
        self._heartbeat = LoopingCall(self._send_heartbeat)
        self._heartbeat.clock = self.link.clock
        self._heartbeat.start(interval, now=False)
        self.link.signed_on(self)

    def _sign_on_failed(self, failure: Failure) -> None:
        if not self.lost:
            self._log.warning("record_link_sign_on_failed", detail=str(failure.value))
            self.abort()

    def dataReceived(self, data: bytes) -> None:
        try:
            records = self.framer.feed(data)
        except FramingError as exc:
            self._log.warning("record_link_framing_broken", detail=str(exc))
            self.abort()
            return
        for record in records:
            if self.lost:
                return
            self._received(record)

    def _received(self, record: bytes) -> None:
        try:
            sequence = self.link.dialect.sequence_of(record)
        except ValueError as exc:
            # Whose answer it is cannot be told: every request on the link
            # may have been answered by it.  The link is dropped.
            self._log.warning("record_link_unreadable_record", detail=str(exc), size=len(record))
            self.abort()
            return
        waiting = self.pending.pop(sequence, None)
        if waiting is None:
            try:
                reply = self.link.dialect.unsolicited(record)
            except ValueError:
                reply = None
            if reply is not None:
                self.transport.write(self.framer.frame(reply))
                return
            self._log.warning("record_link_unmatched_answer", sequence=sequence, size=len(record))
            return
        if waiting.timer.active():
            waiting.timer.cancel()
        waiting.deferred.callback(record)

    def connectionLost(self, reason=None):
        self.lost = True
        self.signed_on = False
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._log.info("record_link_lost", detail=str(reason.value) if reason else "", in_flight=len(self.pending))
        pending, self.pending = self.pending, {}
        for sequence, waiting in pending.items():
            if waiting.timer.active():
                waiting.timer.cancel()
            waiting.deferred.errback(BillerOutcomeUnknown(
                f"link lost with {waiting.kind} #{sequence} on it: the host may have taken it"))
        self.link.connection_lost(self)

    def abort(self) -> None:
        if not self.lost:
            self.transport.abortConnection()

    # --- sending -------------------------------------------------------------------

    def send(self, kind: str, build: Callable[[int], bytes], timeout: float) -> Deferred[bytes]:
        """Frame and write the record ``build(sequence)`` and wait for the
        answer of its sequence number (see the module's outcome table)."""
        if self.lost:
            raise BillerUnavailable("link lost")
        sequence = self.link.next_sequence(self.pending)
        try:
            framed = self.framer.frame(build(sequence))
        except (FramingError, ValueError) as exc:
            raise BillerUnavailable(f"{kind} record not sent: {exc}") from exc

        def cancelled(_d):
            waiting = self.pending.pop(sequence, None)
            if waiting is not None and waiting.timer.active():
                waiting.timer.cancel()

        d: Deferred[bytes] = Deferred(cancelled)

        def timed_out():
            if self.pending.pop(sequence, None) is not None:
                d.errback(BillerOutcomeUnknown(f"no answer to {kind} #{sequence} within {timeout:g} s"))

        timer = self.link.clock.callLater(timeout, timed_out)
        self.pending[sequence] = _Pending(d, timer, kind)
        self.transport.write(framed)
        return d

    def _send_heartbeat(self) -> None:
        if any(w.kind == "heartbeat" for w in self.pending.values()):
            return  # the last one is still within its timeout
        now = _dt.datetime.fromtimestamp(self.link.clock.seconds(), _dt.timezone.utc)
        try:
            d = self.send("heartbeat", lambda seq: self.link.dialect.heartbeat(seq, now),
                          self.link.settings.heartbeat_timeout)
        except BillerUnavailable as exc:  # the link is going: nothing to watch
            self._log.info("record_link_heartbeat_not_sent", detail=str(exc))
            return

        def unanswered(failure: Failure):
            if failure.check(BillerOutcomeUnknown) and not self.lost:
                self._log.warning("record_link_dead", detail=str(failure.value), in_flight=len(self.pending))
                self.abort()
            return None

        d.addErrback(unanswered)


class _LinkFactory(Factory):
    def __init__(self, link: "RecordLink"):
        self.link = link

    def buildProtocol(self, addr):
        protocol = RecordLinkProtocol(self.link)
        protocol.factory = self
        return protocol


class RecordLink:
    """The persistent link: ``start``/``stop``/``health`` and ``request``."""

    def __init__(self, clock, endpoint, dialect: LinkDialect, settings: LinkSettings = LinkSettings(), *,
                 log: Any = None, jitter: Callable[[], float] | None = None, name: str = "host"):
        self.clock = clock
        self.dialect = dialect
        self.settings = settings
        self.log = (log if log is not None else structlog.get_logger()).bind(record_link=name)
        self.current: RecordLinkProtocol | None = None
        self.running = False
        self.connects = 0  # sign-ons that succeeded, since construction
        self._sequence = 0
        # Validate the framing now (a configuration error, not a runtime one).
        RecordFramer(settings.framing, record_length=settings.record_length, max_record=settings.max_record)
        policy = backoffPolicy(initialDelay=settings.reconnect_initial, maxDelay=settings.reconnect_max,
                               factor=2.0, **({"jitter": jitter} if jitter is not None else {}))
        self._policy = policy
        self._failures = 0
        self._waiters: list[Deferred] = []
        # No prepareConnection: ClientService cannot take a connection that
        # failed its preparation and then closes.  The protocol signs on by
        # itself and tells us (signed_on); a refused sign-on drops the link.
        self._service = ClientService(endpoint, _LinkFactory(self), retryPolicy=self._retry_delay, clock=clock)

    def _retry_delay(self, _attempts_since_connect: int) -> float:
        # ClientService counts failed attempts since the last TCP connect;
        # a host that accepts the connection and then refuses the sign-on
        # must back off as well, so we count since the last good sign-on.
        self._failures += 1
        return self._policy(self._failures - 1)  # reconnect_initial first, then doubling

    def signed_on(self, protocol: RecordLinkProtocol) -> None:
        self.current = protocol
        self.connects += 1
        self._failures = 0
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def connection_lost(self, protocol: RecordLinkProtocol) -> None:
        if self.current is protocol:
            self.current = None

    def next_sequence(self, in_use) -> int:
        """The next sequence number, 1..max_sequence and round again,
        skipping any still waiting for its answer."""
        limit = self.settings.max_sequence
        for _ in range(limit):
            self._sequence = self._sequence % limit + 1
            if self._sequence not in in_use:
                return self._sequence
        raise BillerUnavailable("every sequence number is in flight")

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start keeping the link up; fires once signed on, or after
        ``start_wait`` seconds (the link then keeps trying in the background)."""
        self.running = True
        self._service.startService()
        done: Deferred[None] = Deferred()

        def fire(_=None):
            if not done.called:
                done.callback(None)

        if self.current is not None and self.current.signed_on:
            fire()
            return done
        timer = self.clock.callLater(self.settings.start_wait, fire)
        connected: Deferred[None] = Deferred()
        self._waiters.append(connected)
        connected.addCallback(lambda _: (timer.cancel() if timer.active() else None, fire()))
        return done

    def stop(self) -> Deferred[None]:
        self.running = False
        self._waiters.clear()
        return self._service.stopService()

    def health(self) -> BillerHealth:
        in_flight = len(self.current.pending) if self.current is not None else 0
        if not self.running:
            return BillerHealth(HealthState.STOPPED)
        if self.current is None or not self.current.signed_on:
            return BillerHealth(HealthState.DOWN, "link down: reconnecting")
        return BillerHealth(HealthState.UP, f"link up, {self.connects} sign-on(s)", in_flight)

    # --- requests ------------------------------------------------------------------

    def request(self, kind: str, build: Callable[[int], bytes], timeout: float | None = None) -> Deferred[bytes]:
        """Send ``build(sequence)`` on the link and answer the record that
        echoes its sequence number (bytes).  Fails per the module's table."""
        link = self.current
        if not self.running or link is None or not link.signed_on or link.lost:
            return fail(BillerUnavailable("no signed-on link to the host (reconnecting)"))
        try:
            return link.send(kind, build, timeout if timeout is not None else self.settings.request_timeout)
        except BillerUnavailable as exc:
            return fail(exc)

