"""The one interface every biller adapter implements.

The gateway's transaction processor speaks only this interface; each legacy
biller system (SOAP over HTTP, fixed-width records over TCP, a database the
biller batch-posts from, a JSON bill-pull API...) gets its own adapter behind
it.  Every method returns a Deferred and never blocks the reactor; the caller
applies the per-biller timeout with its injected clock.

Amounts are integers in minor units of the service's currency.

Failures are told apart by what they mean for the money:

- :class:`BillerDeclined` -- the biller answered and refused; nothing was
  recorded.  Carries a :class:`DeclineReason` the gateway maps to a response
  code.
- :class:`BillerUnavailable` -- the request certainly did not reach the
  biller (connection refused, circuit open); nothing was recorded.
- :class:`BillerOutcomeUnknown` -- the request may have reached the biller but
  no usable answer came back (connection lost, HTTP 5xx after sending,
  garbage).  For a payment this means IN_DOUBT: resolve it with
  :meth:`BillerAdapter.status`, never by posting again.

A timeout applied by the caller (``Deferred.addTimeout``) cancels the
Deferred; adapters must make cancellation abort their request.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred


class DeclineReason(enum.Enum):
    """Why a biller refused; mapped to ISO 8583 response codes in conf/."""

    UNKNOWN_BILLING_NUMBER = "unknown_billing_number"
    BILL_NOT_FOUND = "bill_not_found"
    NO_BILL_DUE = "no_bill_due"
    BILL_ALREADY_PAID = "bill_already_paid"
    INVALID_AMOUNT = "invalid_amount"
    NOT_PERMITTED = "not_permitted"
    CUTOFF_PASSED = "cutoff_passed"
    OTHER = "other"


class BillerError(Exception):
    """Base of the failures an adapter reports."""


class BillerDeclined(BillerError):
    """The biller answered and refused the request; nothing was recorded."""

    def __init__(self, reason: DeclineReason, detail: str = ""):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class BillerUnavailable(BillerError):
    """The request certainly never reached the biller; nothing was recorded."""


class BillerOutcomeUnknown(BillerError):
    """The request may have reached the biller; the outcome is not known."""


@dataclass(frozen=True)
class BillQuery:
    """A bill inquiry: which subscriber (billing number) of which service."""

    biller_code: str
    service_code: str
    billing_number: str
    bill_number: str | None = None


@dataclass(frozen=True)
class Bill:
    bill_number: str
    amount_due: int  # minor units
    due_date: str  # YYYYMMDD
    currency: str  # ISO 4217 numeric, e.g. "400"


@dataclass(frozen=True)
class BillInquiryResult:
    billing_number: str
    customer_name: str
    bills: tuple[Bill, ...]

    @property
    def total_due(self) -> int:
        return sum(b.amount_due for b in self.bills)


@dataclass(frozen=True)
class PaymentOrder:
    """One payment to post.  ``payment_id`` is gateway-unique: the biller uses
    it to de-duplicate, so posting the same order twice records it once."""

    payment_id: str
    biller_code: str
    service_code: str
    billing_number: str
    bill_number: str | None
    amount: int  # minor units
    currency: str  # ISO 4217 numeric
    paid_at: str  # ISO 8601 UTC timestamp of acceptance by the gateway
    channel: str = "ATM"


@dataclass(frozen=True)
class PaymentConfirmation:
    """The biller recorded the payment."""

    payment_id: str
    receipt_number: str
    amount: int
    bill_number: str | None = None


class PaymentStatusKind(enum.Enum):
    POSTED = "posted"  # the biller holds the payment
    NOT_FOUND = "not_found"  # the biller never recorded it
    REVERSED = "reversed"  # recorded, then undone


@dataclass(frozen=True)
class PaymentStatus:
    payment_id: str
    status: PaymentStatusKind
    receipt_number: str | None = None
    amount: int | None = None


@dataclass(frozen=True)
class ReversalConfirmation:
    payment_id: str
    reversed: bool  # False when the biller never had the payment
    detail: str = ""


@dataclass(frozen=True)
class BillerCapabilities:
    """What an adapter's biller supports, so policy is checked before calling."""

    can_reverse: bool = True
    can_query_status: bool = True
    extra: dict = field(default_factory=dict)


class BillerAdapter(Protocol):
    """What the gateway needs from any biller system."""

    capabilities: BillerCapabilities

    def inquire(self, query: BillQuery) -> Deferred[BillInquiryResult]:
        """Look the subscriber's open bills up."""

    def pay(self, order: PaymentOrder) -> Deferred[PaymentConfirmation]:
        """Post a payment, idempotently on ``order.payment_id``."""

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        """Tell whether the biller holds the payment (resolves IN_DOUBT)."""

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        """Undo a posted payment, idempotently; refused with BillerDeclined
        (NOT_PERMITTED) where the biller's policy forbids reversals."""
