"""DeliveryRecorder: deliver_sm receipts from the links into the outbox.

The link has already answered each deliver_sm (deliver_sm_resp, matched or
not, before this runs: an unanswered one is redelivered by the SMSC).  Here
a receipt is read (:func:`billgw.sms.dlr.receipt_from_pdu`) and recorded on
its part (:func:`billgw.sms.deliveries.record_deliveries`), receipts that
arrive together in one transaction (group commit, like the sender's
outcomes).

**A receipt before its id is known.**  An SMSC may send the receipt before
its submit_sm_resp, or the sender may not have committed the part yet.  A
receipt whose id matches no part is *held*: tried again whenever the sender
has recorded new parts (:meth:`parts_recorded`) and on a timer, for at most
``hold_seconds``, at most ``max_held`` receipts (the oldest is given up
first).  A receipt given up is logged (``sms.dlr_unmatched``) with its id
and state: it may belong to another system on the same account.
"""
from __future__ import annotations

import collections

import structlog
from twisted.application.service import Service
from twisted.internet import defer, task

from billgw.sms.deliveries import IncomingReceipt, record_deliveries
from billgw.sms.dlr import NotAReceipt, receipt_from_pdu


class DeliveryRecorder(Service):
    name = "sms-delivery-receipts"

    def __init__(self, *, run_in_db, clock, logger=None, hold_seconds: float = 600.0, max_held: int = 10000,
                 retry_interval: float = 5.0):
        if hold_seconds <= 0 or max_held < 1 or retry_interval <= 0:
            raise ValueError("hold_seconds and retry_interval must be positive, max_held at least 1")
        self._run_in_db = run_in_db
        self._clock = clock
        self._log = logger or structlog.get_logger()
        self.hold_seconds = hold_seconds
        self.max_held = max_held
        self.retry_interval = retry_interval
        self._queue: list[tuple[IncomingReceipt, float]] = []  # (receipt, first seen)
        self._held: collections.deque[tuple[IncomingReceipt, float]] = collections.deque()
        self._recording: defer.Deferred | None = None
        self._loop: task.LoopingCall | None = None
        self.recorded = 0  # receipts matched to a part
        self.given_up = 0  # receipts never matched
        self._recorded_waiters: list[tuple[int, defer.Deferred]] = []

    @property
    def held(self) -> int:
        return len(self._held)

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.parts_recorded)
        self._loop.clock = self._clock
        self._loop.start(self.retry_interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._held:
            # Answered already, so the SMSC will not send them again: their
            # parts keep no receipt (billgw sms show tells).
            self._log.warning("sms.dlr_held_at_stop", receipts=len(self._held),
                              message_ids=[i.receipt.message_id for i, _ in list(self._held)[:20]])
        return self.idle()

    # -- from the links ----------------------------------------------------
    def deliver_sm(self, pdu, smsc: str | None) -> None:
        """The links' ``on_deliver``: never raises (the answer is already sent)."""
        now = self._clock.seconds()
        try:
            receipt = receipt_from_pdu(pdu)
        except NotAReceipt as e:
            self._log.info("sms.deliver_sm_not_a_receipt", smsc=smsc, reason=str(e))
            return
        except ValueError as e:
            self._log.warning("sms.dlr_unreadable", smsc=smsc, error=str(e))
            return
        self._queue.append((IncomingReceipt(smsc, receipt, now), now))
        self._record_soon()

    def parts_recorded(self) -> None:
        """New parts (message ids) are in the database: try the held receipts
        again, and give up those held too long."""
        now = self._clock.seconds()
        while self._held:
            incoming, first = self._held.popleft()
            if now - first > self.hold_seconds:
                self._give_up(incoming, "no part with this id within hold_seconds")
            else:
                self._queue.append((incoming, first))
        if self._queue:
            self._record_soon()

    def wait_recorded(self, count: int) -> defer.Deferred:
        """Fires once ``count`` receipts have been matched and committed
        (tests, the demo).  The caller applies a timeout."""
        d = defer.Deferred()
        self._recorded_waiters.append((count, d))
        self._fire_recorded()
        return d

    def _fire_recorded(self) -> None:
        for waiter in [w for w in self._recorded_waiters if self.recorded >= w[0]]:
            self._recorded_waiters.remove(waiter)
            waiter[1].callback(self.recorded)

    def idle(self) -> defer.Deferred:
        """Fires once nothing is being recorded (tests; stop)."""
        if self._recording is None or self._recording.called:
            return defer.succeed(None)
        d = defer.Deferred()
        self._recording.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    # -- recording -----------------------------------------------------------
    def _record_soon(self) -> None:
        if self._recording is None or self._recording.called:
            self._recording = None
            d = self._record_loop()
            if not d.called:
                self._recording = d

    @defer.inlineCallbacks
    def _record_loop(self):
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = yield self._run_in_db(record_deliveries, [i for i, _ in batch])
                except Exception:
                    # Kept: a database hiccup must not lose a receipt.
                    self._log.exception("sms.dlr_record_failed", receipts=len(batch))
                    for item in batch:
                        self._hold(*item)
                    return
                for (incoming, first), result in zip(batch, results):
                    if result.matched:
                        self.recorded += 1
                        self._log.info("sms.dlr", smsc=incoming.smsc, message_id=incoming.receipt.message_id,
                                       stat=incoming.receipt.stat, outbox_id=result.outbox_id,
                                       part=result.part_number, row_state=result.row_state,
                                       duplicate=result.duplicate or None, source=incoming.receipt.source)
                    else:
                        self._hold(incoming, first)
                self._fire_recorded()
        finally:
            self._recording = None

    def _hold(self, incoming: IncomingReceipt, first: float) -> None:
        if self._clock.seconds() - first > self.hold_seconds:
            self._give_up(incoming, "no part with this id within hold_seconds")
            return
        self._held.append((incoming, first))
        while len(self._held) > self.max_held:
            old, _ = self._held.popleft()
            self._give_up(old, f"more than {self.max_held} receipts held")

    def _give_up(self, incoming: IncomingReceipt, reason: str) -> None:
        self.given_up += 1
        self._log.warning("sms.dlr_unmatched", smsc=incoming.smsc, message_id=incoming.receipt.message_id,
                          stat=incoming.receipt.stat, reason=reason)
