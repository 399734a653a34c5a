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

**Contract version 2: recording can come later.**  ``pay()`` may answer
:class:`PaymentAccepted` instead of :class:`PaymentConfirmation`: the biller
durably took the payment into its intake (the money is safe there) and its
own batch books it later.  The gateway approves the ATM, keeps the payment
ACCEPTED and sends no receipt; it asks :meth:`BillerAdapter.status` until
the biller says POSTED (then CONFIRMED, and the receipt goes out) or
REJECTED (its batch refused the row: an EXCEPTION, a person refunds).
While the row waits in the intake, ``status()`` answers ACCEPTED.

Beyond the four calls, an adapter may be a service with a lifecycle
(:class:`BillerLifecycle`: ``start``, ``stop``, ``health``) -- a persistent
link is opened at start-up and closed on stop -- and may read its biller's
ledger for ``billgw audit`` (:class:`LedgerReading`).  Both are optional, so
adapters written for the first contract keep working: the gateway wraps
every adapter in :class:`~billgw.billing_adapters.guarded.GuardedAdapter`,
which supplies them.
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


class BillStatus(enum.Enum):
    """A bill's state at the biller (DOMAIN: Bill)."""

    NEW = "NEW"
    PARTIALLY_PAID = "PARTIALLY_PAID"
    PAID = "PAID"
    OVERPAID = "OVERPAID"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Bill:
    bill_number: str
    amount_due: int  # minor units
    due_date: str  # YYYYMMDD
    currency: str  # ISO 4217 numeric, e.g. "400"
    # What bill-pull billers say beyond the amount (None: the biller did not say).
    status: BillStatus = BillStatus.NEW
    issue_date: str | None = None  # YYYYMMDD
    expiry_date: str | None = None  # YYYYMMDD: not payable after it
    allow_partial: bool | None = None
    min_amount: int | None = None  # minor units, when partial payments are allowed
    max_amount: int | None = None  # minor units; above amount_due: advance payments allowed


@dataclass(frozen=True)
class BillInquiryResult:
    billing_number: str
    customer_name: str
    bills: tuple[Bill, ...]

    @property
    def total_due(self) -> int:
        return sum(b.amount_due for b in self.bills)


@dataclass(frozen=True)
class BillAmount:
    """What a payment puts on one bill: ``amount`` in minor units, of which
    ``surcharge`` is the late-payment surcharge (gateway/bill_rules.py)."""

    bill_number: str
    amount: int
    surcharge: int = 0


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
    # What the gateway's bill rules decided the payment settles, oldest bill
    # first (empty when the service leaves that to the biller); ``amount``
    # minus their sum is an advance on the account.
    bills: tuple[BillAmount, ...] = ()
    surcharge: int = 0  # the late-payment surcharge included in ``amount``


@dataclass(frozen=True)
class PaymentConfirmation:
    """The biller recorded the payment."""

    payment_id: str
    receipt_number: str
    amount: int  # what the biller recorded: compared with the order's amount
    bill_number: str | None = None
    settled: tuple[BillAmount, ...] = ()  # the bills the biller settled, when it says


@dataclass(frozen=True)
class PaymentAccepted:
    """Contract v2: the biller durably took the payment into its intake, and
    its own batch will record it (or reject it) later.

    The ATM may be approved -- the money is safe at the biller -- but the
    subscriber's receipt waits until :meth:`BillerAdapter.status` says
    POSTED.  ``intake_reference`` is the biller's reference of the intake
    record (shown on the ATM's 0210 as the receipt number); the receipt
    number the SMS carries comes with the POSTED status."""

    payment_id: str
    intake_reference: str
    amount: int  # what the biller took into its intake
    bill_number: str | None = None
    settled: tuple[BillAmount, ...] = ()


@dataclass(frozen=True)
class LedgerEntry:
    """One payment in a biller's own ledger, as an auditor sees it
    (:meth:`LedgerReading.read_ledger`)."""

    payment_id: str
    subscriber: str  # the billing number
    bill_number: str
    amount: int
    receipt_number: str
    reversed: bool
    posted_at: str
    # Contract v2: taken into the biller's intake, its batch not run yet
    # (``pending``), or refused by its batch (``rejected``: the biller holds
    # nothing).  Billers that record at once leave both False.
    pending: bool = False
    rejected: bool = False

    @property
    def held(self) -> bool:
        """The biller holds the money for this payment (booked or in its intake)."""
        return not self.reversed and not self.rejected


class PaymentStatusKind(enum.Enum):
    POSTED = "posted"  # the biller holds the payment
    NOT_FOUND = "not_found"  # the biller never recorded it
    REVERSED = "reversed"  # recorded, then undone
    # Contract v2 (see PaymentAccepted):
    ACCEPTED = "accepted"  # in the biller's intake, its batch has not booked it yet
    REJECTED = "rejected"  # the biller's batch refused it: the biller holds nothing


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

    def pay(self, order: PaymentOrder) -> Deferred[PaymentConfirmation | PaymentAccepted]:
        """Post a payment, idempotently on ``order.payment_id``: recorded
        (PaymentConfirmation), or taken into the biller's intake to be
        recorded by its batch (PaymentAccepted; contract v2)."""

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        """Tell whether the biller holds the payment (resolves IN_DOUBT)."""

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        """Undo a posted payment, idempotently; refused with BillerDeclined
        (NOT_PERMITTED) where the biller's policy forbids reversals."""


class HealthState(enum.Enum):
    """How a biller looks from the gateway (DOMAIN: ACTIVE / OFFLINE)."""

    UP = "up"  # calls go through
    DEGRADED = "degraded"  # calls go through, but recent ones failed (breaker half-open)
    DOWN = "down"  # calls are answered "unavailable" at once (breaker open, link down)
    MAINTENANCE = "maintenance"  # inside a configured maintenance window
    STOPPED = "stopped"  # not started, or stopped


@dataclass(frozen=True)
class BillerHealth:
    state: HealthState
    detail: str = ""
    in_flight: int = 0


class BillerLifecycle(Protocol):
    """Optional: an adapter that holds resources (a persistent link, a pool)."""

    def start(self) -> Deferred[None]:
        """Open what the adapter needs; fires once it can take calls (or
        keeps trying in the background, for a link that reconnects)."""

    def stop(self) -> Deferred[None]:
        """Close everything; calls made afterwards fail BillerUnavailable."""

    def health(self) -> BillerHealth:
        """What the adapter knows of its biller now (no I/O)."""


class LedgerReading(Protocol):
    """Optional: an adapter that can read what its biller recorded.

    For ``billgw audit`` (and, later, reconciliation): an *offline* read
    that blocks -- never call it on the reactor thread of a running
    gateway (use a thread).  ``source`` overrides where the ledger is read
    (a file, a URL); None reads the one the adapter's settings name.
    Raises :class:`LedgerUnavailable` when it cannot be read.
    """

    def read_ledger(self, source: str | None = None) -> list[LedgerEntry]:
        """Every payment the biller holds, reversed ones included."""


class LedgerUnavailable(BillerError):
    """The biller's ledger cannot be read (missing file, unreachable, garbage)."""


class CapabilityMissing(BillerUnavailable):
    """The biller does not offer this call (``capabilities``); it was not asked.

    A :class:`BillerUnavailable` -- nothing was sent -- so callers written for
    the first contract retry it; the caller should rather settle the
    payment by the biller's own means (a reversal, or an EXCEPTION).
    """
