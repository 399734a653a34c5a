"""A biller that answers at once from memory: the ``instant`` adapter kind.

It exists to measure the gateway itself: with it, a benchmark's figures are
the gateway's framing, rules, journal and SMS outbox, not a biller's
latency (``make bench``); tests use it where a real biller would only add
noise.  It is configured like any biller (``adapter = "instant"``) and keeps
every promise of the interface -- idempotent on the payment id, status,
reversal -- so the gateway runs exactly its production paths against it.
Its ledger lives in process memory and is lost when the gateway stops:
never configure it for a real biller.
"""
from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail, succeed

from .interface import (
    Bill,
    BillerCapabilities,
    BillerDeclined,
    BillInquiryResult,
    BillQuery,
    DeclineReason,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    PaymentStatusKind,
    ReversalConfirmation,
)


@dataclass
class _Held:
    receipt_number: str
    amount: int
    reversed: bool = False


class InstantBiller:
    """Every subscriber owes one bill of ``bill_amount``; every payment is
    recorded at once, under its payment id."""

    capabilities = BillerCapabilities(can_reverse=True, can_query_status=True)

    def __init__(self, *, customer_name: str = "Benchmark Subscriber", bill_amount: int = 12_500,
                 currency: str = "400", due_date: str = "20261231"):
        self._customer_name = customer_name
        self._bill_amount = bill_amount
        self._currency = currency
        self._due_date = due_date
        self._held: dict[str, _Held] = {}
        self._cancelled: set[str] = set()  # reversed before they arrived: never recorded later

    def inquire(self, query: BillQuery) -> Deferred[BillInquiryResult]:
        bill = Bill(f"IB-{query.billing_number}", self._bill_amount, self._due_date, self._currency)
        return succeed(BillInquiryResult(query.billing_number, self._customer_name, (bill,)))

    def pay(self, order: PaymentOrder) -> Deferred[PaymentConfirmation]:
        if order.payment_id in self._cancelled:
            return fail(BillerDeclined(DeclineReason.NOT_PERMITTED, "payment id was reversed"))
        held = self._held.get(order.payment_id)
        if held is None:
            held = self._held[order.payment_id] = _Held(f"IR{len(self._held) + 1:010d}", order.amount)
        return succeed(PaymentConfirmation(order.payment_id, held.receipt_number, held.amount,
                                           order.bill_number or f"IB-{order.billing_number}"))

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        held = self._held.get(payment_id)
        if held is None:
            return succeed(PaymentStatus(payment_id, PaymentStatusKind.NOT_FOUND))
        kind = PaymentStatusKind.REVERSED if held.reversed else PaymentStatusKind.POSTED
        return succeed(PaymentStatus(payment_id, kind, held.receipt_number, held.amount))

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        held = self._held.get(payment_id)
        if held is None:
            self._cancelled.add(payment_id)
            return succeed(ReversalConfirmation(payment_id, False, "never recorded"))
        held.reversed = True
        return succeed(ReversalConfirmation(payment_id, True))

    def close(self):
        return succeed(None)
