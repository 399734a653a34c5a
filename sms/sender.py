"""OutboxSender: drains ``sms_outbox`` into an SMPP link, a window at a time.

Why it is shaped like this:

* The database is reached only through the injected ``run_in_db(fn, *args)``,
  which runs ``fn(conn, *args)`` in one transaction on the gateway's bounded
  DB pool; so this package never imports the gateway, and tests pass a
  synchronous one.
* **Batched.** One transaction claims up to a window of due rows and marks
  them SENDING (:func:`~billgw.sms.outbox.claim_for_submit`); the outcomes
  are recorded together (:func:`~billgw.sms.outbox.record_outcomes`): every
  outcome that arrives while a write is running waits for the next one, so
  a busy drain costs about two transactions per window, not two or three
  per receipt.  No transaction stays open across the network.
* **Windowed.** Up to ``link.window`` receipts are with the link at once;
  the link paces them and keeps a response timer per part.  A freed slot is
  refilled at once.
* **Exactly one receipt** -- what each answer of the link does to the row:

  ======================  ===============================================
  SubmitResult            SENT, with the SMSC's message ids
  SmppLinkDown            given back (QUEUED/FAILED, the attempt refunded):
                          nothing was written, so nothing can duplicate
  SmppSubmitError temp.   FAILED, retried after back-off; ABANDONED after
                          ``max_attempts``
  SmppSubmitError perm.   ABANDONED at once (the status table said so)
  SmppInvalidMessage      ABANDONED at once (bad MSISDN, unencodable): the
                          row fails alone, the bind is untouched
  SmppUncertain           UNCERTAIN: written without an answer, or only some
                          parts accepted.  The SMSC may have it; it is never
                          resent automatically (``billgw audit`` lists it,
                          an operator decides).  docs/sms.md explains why.
  ======================  ===============================================

* A poll (``LoopingCall`` on the injected clock) catches retries and rows
  written by other processes; :meth:`OutboxSender.wake` lets the gateway send
  a fresh receipt at once.  At most one drain runs at a time; a wake during a
  drain makes it do one more pass instead of starting a second drain.
* While the link reports it is not bound, nothing is claimed: an SMSC outage
  must not use up a receipt's attempts.

Logs carry the payment id and outbox id, never the text (it names the card's
last digits and the subscriber's account) nor the MSISDN.
"""
from __future__ import annotations

import structlog
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.python.failure import Failure

from billgw.sms import outbox
from billgw.sms.backoff import exponential_backoff
from billgw.sms.outbox import Outcome, OutboxState
from billgw.sms.smpp_link import (
    SmppInvalidMessage,
    SmppLinkDown,
    SmppSubmitError,
    SmppUncertain,
    SubmitResult,
)


def describe_error(failure: Failure) -> str:
    """A short, card-data-free description of why a submit failed."""
    error = failure.value
    return f"{type(error).__name__}: {error}"


class OutboxSender(Service):
    def __init__(
        self,
        *,
        run_in_db,
        link,
        clock,
        owner: str,
        poll_interval: float = 5.0,
        batch_size: int = 20,
        lease_seconds: float = 120.0,
        max_attempts: int = 10,
        retry_base: float = 30.0,
        retry_cap: float = 3600.0,
        expire_after: float | None = None,
        on_parts_recorded=None,
        logger=None,
    ):
        """``expire_after``: a receipt not submitted that many seconds after it
        was queued is not sent any more (EXPIRED).  ``on_parts_recorded()``
        is called after message ids were committed (the delivery recorder
        then retries receipts that came before their ids)."""
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        self._run_in_db = run_in_db
        self._link = link
        self._clock = clock
        self.owner = owner
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.expire_after = expire_after
        self._on_parts_recorded = on_parts_recorded
        self._log = (logger or structlog.get_logger()).bind(sms_sender=owner)
        self._loop: task.LoopingCall | None = None
        self._draining = False
        self._again = False
        self._stopping = False
        self._drain_waiters: list[defer.Deferred] = []
        self._in_flight: dict[int, object] = {}  # outbox id -> item, with the link
        self._slot_waiters: list[defer.Deferred] = []
        self._outcomes: list[tuple[Outcome, object]] = []
        self._recording: defer.Deferred | None = None
        self.transactions = 0  # DB transactions run: what the batching saves

    @property
    def window(self) -> int:
        return max(1, int(getattr(self._link, "window", 1)))

    def startService(self):
        super().startService()
        self._stopping = False
        self._loop = task.LoopingCall(self.wake)
        self._loop.clock = self._clock
        self._loop.start(self.poll_interval, now=True)

    def stopService(self):
        """Stop polling and wait for the drain in progress (each receipt with
        the link is bounded by its per-part response timers)."""
        super().stopService()
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self._when_drained() if self._draining else defer.succeed(None)

    def wake(self) -> defer.Deferred:
        """Send what is due now.  Fires (never fails) once a drain that started
        after this call has finished and recorded its outcomes."""
        waiter = self._when_drained()
        if self._draining:
            self._again = True
            self._free_slot_waiters()
        else:
            self._draining = True
            self._drain().addBoth(self._drained)
        return waiter

    def _when_drained(self) -> defer.Deferred:
        d = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    def _drained(self, result):
        if isinstance(result, Failure):  # a bug: _drain catches what it expects
            self._log.error("sms.drain_crashed", exc_info=result.value)
        self._draining = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)

    def _run(self, fn, *args) -> defer.Deferred:
        self.transactions += 1
        return self._run_in_db(fn, *args)

    @defer.inlineCallbacks
    def _drain(self):
        while True:
            more = True
            while True:
                self._again = False
                if more:
                    more = yield self._fill()
                if self._stopping or not self._in_flight:
                    break
                if not self._again:
                    yield self._slot_freed()  # an answer, or a wake
                more = more or self._again
            yield self._all_done()  # only when stopping: what is with the link
            yield self._record_pending()
            if not self._again or self._stopping:
                return

    @defer.inlineCallbacks
    def _fill(self):
        """Claim and hand over receipts while the window has room and rows
        are due.  True when it stopped because the window was full (more rows
        may be due), False when nothing more can be claimed now."""
        while not self._stopping:
            if not getattr(self._link, "bound", True):
                self._log.debug("sms.link_not_bound")
                return False
            free = self.window - len(self._in_flight)
            if free <= 0:
                return True
            limit = min(free, self.batch_size)
            try:
                items = yield self._run(self._claim, self._clock.seconds(), limit)
            except Exception:
                self._log.exception("sms.claim_failed")
                return False
            for item in items:
                self._submit(item)
            if len(items) < limit:
                return False  # nothing more is due now
        return False

    def _claim(self, conn, now, limit):
        return outbox.claim_for_submit(conn, now=now, owner=self.owner, lease_seconds=self.lease_seconds,
                                       limit=limit, expire_after=self.expire_after)

    def _submit(self, item) -> None:
        self._in_flight[item.id] = item
        try:
            d = self._link.submit(item.msisdn, item.text)
        except Exception:  # a bug in the link: the row may or may not be out
            d = defer.fail(SmppUncertain(f"link raised {describe_error(Failure())}", [], 0))
        d.addBoth(self._answered, item)

    def _answered(self, result, item) -> None:
        outcome = self._outcome(result, item)
        self._in_flight.pop(item.id, None)
        self._outcomes.append((outcome, item))
        self._record_soon()
        self._free_slot_waiters()

    def _free_slot_waiters(self) -> None:
        waiters, self._slot_waiters = self._slot_waiters, []
        for d in waiters:
            d.callback(None)

    def _outcome(self, result, item) -> Outcome:
        keys = dict(attempt=item.attempts, resends=getattr(item, "resends", 0))
        if isinstance(result, SubmitResult):
            return Outcome(item.id, OutboxState.SENT, tuple(result.message_ids), result.data_coding, result.parts,
                           part_times=tuple(result.part_times), smsc=result.smsc, **keys)
        error = result.value if isinstance(result, Failure) else result
        text = describe_error(result) if isinstance(result, Failure) else repr(result)
        if isinstance(error, SmppLinkDown):
            # Not claimed again before the next poll: with several SMSCs the
            # sender goes on while one is down, and must not spin on its rows.
            delay = min(self.poll_interval, self.retry_base)
            return Outcome(item.id, OutboxState.QUEUED, error=text, retry_at=self._clock.seconds() + delay)
        if isinstance(error, SmppUncertain):
            return Outcome(item.id, OutboxState.UNCERTAIN, tuple(error.message_ids), error=text,
                           part_times=tuple(error.part_times), smsc=error.smsc, **keys)
        if isinstance(error, SmppInvalidMessage) or (isinstance(error, SmppSubmitError) and error.permanent):
            return Outcome(item.id, OutboxState.ABANDONED, error=text)
        if isinstance(error, SmppSubmitError):
            if item.attempts >= self.max_attempts:
                return Outcome(item.id, OutboxState.ABANDONED, error=text)
            now = self._clock.seconds()
            retry_at = now + exponential_backoff(item.attempts, self.retry_base, self.retry_cap)
            return Outcome(item.id, OutboxState.FAILED, error=text, retry_at=retry_at)
        # Anything else is a bug somewhere; the row may have left: never resend.
        self._log.error("sms.unexpected_submit_error", payment_id=item.payment_id, outbox_id=item.id, error=text)
        return Outcome(item.id, OutboxState.UNCERTAIN, error=text)

    def _slot_freed(self) -> defer.Deferred:
        d = defer.Deferred()
        self._slot_waiters.append(d)
        return d

    @defer.inlineCallbacks
    def _all_done(self):
        while self._in_flight:
            yield self._slot_freed()

    def _record_soon(self) -> None:
        if self._recording is None or self._recording.called:
            self._recording = None
            d = self._record_loop()
            if not d.called:  # a synchronous run_in_db has finished it already
                self._recording = d

    def _record_pending(self) -> defer.Deferred:
        if self._recording is None or self._recording.called:
            return defer.succeed(None)
        d = defer.Deferred()
        self._recording.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    @defer.inlineCallbacks
    def _record_loop(self):
        """Group commit: one transaction for every outcome queued meanwhile."""
        try:
            while self._outcomes:
                batch, self._outcomes = self._outcomes, []
                now = self._clock.seconds()
                try:
                    done = yield self._run(self._record, [o for o, _ in batch], now)
                except Exception:
                    # The rows stay SENDING; when their lease expires they
                    # become UNCERTAIN (never resent; billgw audit lists them).
                    self._log.exception("sms.record_failed", outbox_ids=[o.item_id for o, _ in batch])
                    continue
                for (o, item), recorded in zip(batch, done):
                    self._log_outcome(o, item, recorded, now)
                if self._on_parts_recorded is not None and any(o.message_ids for o, _ in batch):
                    self._on_parts_recorded()
        finally:
            self._recording = None  # (when asynchronous; see _record_soon)

    def _record(self, conn, outcomes, now):
        return outbox.record_outcomes(conn, outcomes, owner=self.owner, now=now)

    def _log_outcome(self, o: Outcome, item, recorded: bool, now: float) -> None:
        log = self._log.bind(payment_id=item.payment_id, outbox_id=item.id, attempt=item.attempts)
        if not recorded:
            log.warning("sms.outcome_but_lease_lost", outcome=o.state.value, message_ids=list(o.message_ids))
        elif o.state is OutboxState.SENT:
            log.info("sms.sent", message_ids=list(o.message_ids), parts=o.parts, data_coding=o.data_coding)
        elif o.state is OutboxState.FAILED:
            log.warning("sms.send_failed", error=o.error, retry_in=round(o.retry_at - now, 3))
        elif o.state is OutboxState.QUEUED:
            log.info("sms.handed_back", error=o.error)
        elif o.state is OutboxState.UNCERTAIN:
            log.error("sms.uncertain", error=o.error, message_ids=list(o.message_ids),
                      action="not resent: the SMSC may have it")
        else:
            log.error("sms.abandoned", error=o.error)
