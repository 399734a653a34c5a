"""The worker that carries out biller work and settles what a crash left.

Two jobs, on one loop driven by the injected clock:

- **recovery sweep**: payments left RECEIVED or POSTING for longer than any
  biller call can last, and not in flight in this process, were abandoned
  by a process that died; they get the STALE event (never sent -> DECLINED;
  maybe sent -> IN_DOUBT and a status query).  Nothing here depends on what
  a previous process held in memory.
- **biller outbox**: due items (POST, STATUS, REVERSE) are claimed with a
  lease, sent through the biller's adapter under its timeout, and their
  answers applied as events (one transaction each, the item marked done in
  it).  Failures are retried with exponential backoff and jitter; an item
  past its expiry becomes an EXCEPTION.

An ACCEPTED payment (contract v2: in the biller's intake) has a STATUS item
that polls the biller until its batch has run: "still in the intake" is no
event -- the item is simply asked again later, with the same backoff -- and
the POSTED or REJECTED answer settles it.  A biller that answers no status
queries (``capabilities``) is never asked one: its item is settled by the
NO_STATUS event (a reversal, a re-post of an advised payment, or an
EXCEPTION), decided by the state machine.
"""
from __future__ import annotations

import datetime as _dt
import random
from typing import Callable

import structlog
from twisted.application.service import Service
from twisted.internet import defer, task

from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerError,
    PaymentAccepted,
    PaymentOrder,
    PaymentStatusKind,
)
from billgw.iso8583.masking import mask_text

from . import biller_outbox, settle
from .bill_rules import confirmation_problem
from .biller_outbox import BillerWork
from .journal import get
from .machine import Event
from .states import State


class NotRecordedYet(Exception):
    """The biller still holds an ACCEPTED payment in its intake: ask later."""


class BillerWorker(Service):
    name = "biller-worker"

    def __init__(self, *, run_in_db, processor, clock, owner: str, poll_interval: float = 1.0,
                 batch_size: int = 20, lease_seconds: float = 60.0, retry_base: float = 2.0,
                 retry_cap: float = 300.0, stale_after: float = 30.0,
                 on_sms_queued: Callable[[], None] = lambda: None, rng: random.Random | None = None,
                 log=None):
        self._run = run_in_db
        self._processor = processor
        self._clock = clock
        self._owner = owner
        self._poll_interval = poll_interval
        self._batch = batch_size
        self._lease = lease_seconds
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._stale_after = stale_after
        self._on_sms_queued = on_sms_queued
        self._rng = rng or random.Random()
        self._log = log or structlog.get_logger("billgw.biller_worker")
        self._loop: task.LoopingCall | None = None
        self._running: defer.Deferred | None = None
        self._again = False

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.wake)
        self._loop.clock = self._clock
        self._loop.start(self._poll_interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running = self._running
        return running if running is not None else defer.succeed(None)

    def wake(self) -> defer.Deferred:
        """Run one pass now (coalesced: one pass at a time, one more queued)."""
        if self._running is not None:
            self._again = True
            return self._running
        d = self._running = defer.ensureDeferred(self._pass())

        def done(result):
            self._running = None
            if self._again and self.running:
                self._again = False
                self.wake()
            return None

        d.addBoth(done)
        return d

    async def _pass(self) -> None:
        try:
            await self._sweep()
            while True:
                items = await self._run(biller_outbox.claim_due, now=self._clock.seconds(), owner=self._owner,
                                        lease_seconds=self._lease, limit=self._batch)
                for item in items:
                    await self._work(item)
                if len(items) < self._batch or not self.running:
                    break
        except Exception:
            self._log.error("biller worker pass failed", exc_info=True)

    async def _sweep(self) -> None:
        now = self._clock.seconds()
        stale = await self._run(settle.stale_transactions, now=now, older_than=self._stale_after,
                                limit=self._batch)
        for txn_id in stale:
            if self._processor.is_in_flight(txn_id):
                continue
            applied = await self._run(settle.apply_event, txn_id, Event.STALE, self._clock.seconds(),
                                      self._processor.context, detail="recovered: nobody was working on it")
            self._log.warning("recovered an abandoned payment", payment_id=txn_id,
                              state=applied.view.state.value)
            self._after(applied)

    def _after(self, applied) -> None:
        if applied.sms_queued:
            self._on_sms_queued()
        if applied.biller_work:
            self._again = True

    async def _work(self, item: BillerWork) -> None:
        log = self._log.bind(payment_id=item.transaction_id, action=item.action, attempt=item.attempts)
        view = await self._run(get, item.transaction_id)
        route = self._processor.route(view.biller_code if view else None)
        if item.expired or view is None or route is None:
            reason = "expired" if item.expired else "no such payment or biller"
            if view is not None:
                applied = await self._run(settle.apply_event, item.transaction_id, Event.OUTBOX_EXPIRED,
                                          self._clock.seconds(), self._processor.context, detail=reason)
                self._after(applied)
            await self._run(biller_outbox.complete, item.id, now=self._clock.seconds(),
                            state=biller_outbox.EXPIRED, error=reason)
            log.error("biller work gave up: a person must settle this payment", reason=reason)
            return
        try:
            event, values, detail = await self._call(item, view, route)
        except NotRecordedYet as exc:
            await self._retry(item, str(exc), log, poll=True)
            return
        except (BillerError, defer.TimeoutError) as exc:
            await self._retry(item, f"{type(exc).__name__}: {exc}", log)
            return
        except Exception as exc:
            log.error("biller call failed unexpectedly", exc_info=True)
            await self._retry(item, f"{type(exc).__name__}", log)
            return
        applied = await self._run(settle.apply_event, item.transaction_id, event, self._clock.seconds(),
                                  self._processor.context, values=values, detail=mask_text(detail), work_item=item.id)
        log.info("biller work done", machine_event=event.value, state=applied.view.state.value)
        self._after(applied)

    async def _call(self, item: BillerWork, view, route):
        timeout = route.settings.timeout
        adapter = route.adapter
        if item.action == "STATUS":
            if not adapter.capabilities.can_query_status:
                return Event.NO_STATUS, None, "the biller answers no status queries (capabilities)"
            d = adapter.status(view.id)
            d.addTimeout(timeout, self._clock)
            status = await d
            if status.status is PaymentStatusKind.POSTED:
                if status.amount is not None and status.amount != view.amount:
                    # Cross-check: held, but not what the journal says.
                    return (Event.BILLER_AMOUNT_MISMATCH, None,
                            f"biller holds {status.amount}, the journal {view.amount}")
                values = {"biller_receipt": status.receipt_number[:40]} if status.receipt_number else None
                return Event.STATUS_POSTED, values, f"receipt {status.receipt_number}"
            if status.status is PaymentStatusKind.REVERSED:
                return Event.STATUS_REVERSED, None, "already reversed at the biller"
            if status.status is PaymentStatusKind.ACCEPTED:
                if view.state is State.ACCEPTED:
                    raise NotRecordedYet("still in the biller's intake: its batch has not booked it")
                return Event.STATUS_ACCEPTED, None, "in the biller's intake"
            if status.status is PaymentStatusKind.REJECTED:
                return Event.STATUS_REJECTED, None, "the biller's batch rejected it"
            return Event.STATUS_NOT_FOUND, None, "biller never recorded it"
        if item.action == "REVERSE":
            d = adapter.reverse(view.id)
            d.addTimeout(timeout, self._clock)
            try:
                result = await d
            except BillerDeclined as exc:
                return Event.REVERSAL_REFUSED, None, str(exc)
            return Event.BILLER_REVERSED, None, "reversed" if result.reversed else "nothing held"
        if item.action == "POST":
            order = PaymentOrder(
                payment_id=view.id, biller_code=view.biller_code, service_code=view.service_code,
                billing_number=view.billing_number, bill_number=view.bill_number, amount=view.amount,
                currency=view.currency,
                paid_at=view.created_at.replace(tzinfo=_dt.timezone.utc).isoformat(timespec="seconds"))
            d = adapter.pay(order)
            d.addTimeout(timeout, self._clock)
            try:
                confirmation = await d
            except BillerDeclined as exc:
                return Event.BILLER_DECLINED, None, str(exc)
            problem = confirmation_problem(view.amount, confirmation.amount, [b.amount for b in confirmation.settled])
            if problem is not None:  # cross-check: never confirmed (or accepted) as if it matched
                return Event.BILLER_AMOUNT_MISMATCH, None, problem
            if isinstance(confirmation, PaymentAccepted):
                values = {"biller_receipt": confirmation.intake_reference[:40]}
                if confirmation.bill_number and not view.bill_number:
                    values["bill_number"] = confirmation.bill_number[:30]
                return Event.BILLER_ACCEPTED, values, f"intake {confirmation.intake_reference}"
            values = {"biller_receipt": confirmation.receipt_number}
            if confirmation.bill_number and not view.bill_number:
                # The biller chose the bill: keep it, as the in-line path
                # does, for the receipt SMS and the ledger comparison.
                values["bill_number"] = confirmation.bill_number[:30]
            return Event.BILLER_CONFIRMED, values, f"receipt {confirmation.receipt_number}"
        raise ValueError(f"unknown biller action {item.action!r}")

    async def _retry(self, item: BillerWork, error: str, log, *, poll: bool = False) -> None:
        error = mask_text(error)  # a biller's error text may echo card data
        now = self._clock.seconds()
        delay = biller_outbox.backoff(item.attempts, base=self._retry_base, cap=self._retry_cap,
                                      jitter=self._rng.random())
        await self._run(biller_outbox.reschedule, item.id, owner=self._owner, now=now, retry_at=now + delay,
                        error=error)
        if poll:
            log.info("accepted payment not booked yet: asked again later", retry_in=round(delay, 1))
        else:
            log.warning("biller work will be retried", error=error, retry_in=round(delay, 1))
