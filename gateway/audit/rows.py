"""What the audit reads and what it finds: plain dataclasses and the
categories of broken invariants, so that the rules can be tested on rows
built by hand and the stores can be read by thin loaders."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping


# --- categories ---------------------------------------------------------------

POSTED_TWICE = "posted_twice"
CONFIRMED_MISSING_AT_BILLER = "confirmed_missing_at_biller"
AMOUNT_MISMATCH = "amount_mismatch"
REVERSED_STILL_POSTED = "reversed_still_posted"
UNKNOWN_POSTING = "unknown_posting"
UNRESOLVED = "unresolved"
EXCEPTION = "exception"
SMS_FOR_UNCONFIRMED = "sms_for_unconfirmed"
SMS_MISSING = "sms_missing"
SMS_ABANDONED = "sms_abandoned"
ADVISED_NOT_HELD = "advised_not_held"
# A reversal recorded NOT_FOUND although its original is in the journal: the
# two were journaled blind to each other, and the switch refunded a payment
# the gateway may have posted.
REVERSAL_MISSED_ORIGINAL = "reversal_missed_original"
# A confirmed payment the switch reversed: it refunded the customer, the
# biller still holds the money.
CONFIRMED_AFTER_REVERSAL = "confirmed_after_reversal"
# A payment that breaks its service's local rules, yet was posted or is
# being posted (an advice taken past the rules, or rules that let it by).
POSTED_OUTSIDE_RULES = "posted_outside_rules"
# The SMS side's health (gateway/audit/sms_health.py): a receipt QUEUED or
# FAILED longer than [sms] queued_alert_after, and a bind the SMSC refused
# for its credentials (the sender stopped trying: nothing goes out).
SMS_STUCK = "sms_stuck"
SMS_BIND_REFUSED = "sms_bind_refused"
# Contract v2 (a biller that records later): an ACCEPTED payment the biller
# holds nothing for; one ACCEPTED longer than the configured limit (the
# biller's batch is not running); a CONFIRMED one the biller has not booked
# (the receipt went out before the batch).
ACCEPTED_MISSING_AT_BILLER = "accepted_missing_at_biller"
ACCEPTED_TOO_LONG = "accepted_too_long"
CONFIRMED_NOT_BOOKED = "confirmed_not_booked"

# Every category here breaks an invariant: any finding makes the exit status 1.
# The order is the order of the summary (money first, then SMS).
BROKEN_CATEGORIES = (
    POSTED_TWICE,
    CONFIRMED_MISSING_AT_BILLER,
    ACCEPTED_MISSING_AT_BILLER,
    CONFIRMED_NOT_BOOKED,
    ADVISED_NOT_HELD,
    REVERSAL_MISSED_ORIGINAL,
    CONFIRMED_AFTER_REVERSAL,
    POSTED_OUTSIDE_RULES,
    AMOUNT_MISMATCH,
    REVERSED_STILL_POSTED,
    UNKNOWN_POSTING,
    UNRESOLVED,
    ACCEPTED_TOO_LONG,
    EXCEPTION,
    SMS_FOR_UNCONFIRMED,
    SMS_MISSING,
    SMS_ABANDONED,
    SMS_STUCK,
    SMS_BIND_REFUSED,
)

# Informational: printed, never a reason for exit status 1.
REVERSAL_NOT_FOUND = "reversal_not_found"
NOT_AUDITED = "not_audited"
# A receipt whose sender died mid-submit: maybe on the phone, never resent.
SMS_UNCERTAIN = "sms_uncertain"
# A bind that is not up now (DOWN, CONNECTING) or whose state was last
# written long ago (its process may be gone); payments that went on without
# a receipt because their MSISDN was invalid ([sms] invalid_msisdn).
SMS_LINK_NOT_BOUND = "sms_link_not_bound"
SMS_INVALID_MSISDN = "sms_invalid_msisdn"
# Booked by the biller's batch, the gateway's next poll not made yet.
ACCEPTED_BOOKED = "accepted_booked"
NOTE_CATEGORIES = (REVERSAL_NOT_FOUND, NOT_AUDITED, SMS_UNCERTAIN, ACCEPTED_BOOKED,
                   SMS_LINK_NOT_BOUND, SMS_INVALID_MSISDN)

# --- what was read ------------------------------------------------------------

@dataclass(frozen=True)
class JournalRow:
    """One ``transactions`` row, reduced to what the audit compares or shows."""

    id: str
    kind: str  # payment | inquiry
    state: str
    amount: int
    biller_code: str | None
    currency: str = ""
    masked_pan: str | None = None
    msisdn: str | None = None
    acquirer_id: str = ""
    terminal_id: str = ""
    stan: str = ""
    transmission_dt: str = ""
    rrn: str = ""
    biller_receipt: str | None = None
    advice_received: bool = False  # the switch said it debited the customer (0220)
    reversal_requested: bool = False  # the switch reversed it (0420)
    service_code: str | None = None
    billing_number: str | None = None
    local_problem: str | None = None  # the rule the gateway found broken at journaling
    updated_at: float | None = None  # epoch seconds of the row's last change (how long ACCEPTED)

    @property
    def acquirer_keys(self) -> tuple[str, str, str, str]:
        return (self.acquirer_id, self.terminal_id, self.stan, self.transmission_dt)


@dataclass(frozen=True)
class SmsRow:
    """One ``sms_outbox`` row (no text, no MSISDN: the audit needs neither)."""

    id: int
    payment_id: str
    kind: str  # receipt | reversal_notice
    state: str
    attempts: int = 0


@dataclass(frozen=True)
class ReversalRow:
    """One ``reversals`` row; ``transaction_id`` is None when the original was never seen."""

    id: int
    transaction_id: str | None
    state: str
    amount: int
    orig_acquirer_id: str = ""
    orig_terminal_id: str = ""
    orig_stan: str = ""
    orig_transmission_dt: str = ""
    currency: str | None = None


@dataclass(frozen=True)
class BillerOutboxRow:
    """One ``biller_outbox`` row: work the gateway still owes (or gave up on) a biller."""

    id: int
    transaction_id: str
    action: str  # POST | STATUS | REVERSE
    state: str  # PENDING | DONE | EXPIRED
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class JournalSnapshot:
    """The journal's tables as read in one transaction."""

    transactions: tuple[JournalRow, ...]
    sms: tuple[SmsRow, ...]
    reversals: tuple[ReversalRow, ...]
    biller_outbox: tuple[BillerOutboxRow, ...]


# --- what was found -----------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One broken invariant (or one note), for a person and for a machine.

    ``details`` hold masked values only; ``message`` is a whole sentence.
    """

    category: str
    payment_id: str | None
    message: str
    biller_code: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "payment_id": self.payment_id,
                "biller_code": self.biller_code, "message": self.message, "details": dict(self.details)}


@dataclass(frozen=True)
class BillerTotals:
    """Confirmed money per biller as the journal and (when audited) the ledger see it."""

    biller_code: str
    audited: bool
    journal_confirmed_count: int = 0
    journal_confirmed_amount: int = 0
    ledger_posted_count: int | None = None
    ledger_posted_amount: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"audited": self.audited,
                "journal_confirmed_count": self.journal_confirmed_count,
                "journal_confirmed_amount": self.journal_confirmed_amount,
                "ledger_posted_count": self.ledger_posted_count,
                "ledger_posted_amount": self.ledger_posted_amount}


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[Finding, ...]
    notes: tuple[Finding, ...]
    counts: Mapping[str, Mapping[str, int]]  # "payment", "reversal", "sms_receipt"... -> state -> n
    billers: Mapping[str, BillerTotals]

    @property
    def broken(self) -> bool:
        return bool(self.findings)

    @property
    def exit_status(self) -> int:
        return 1 if self.broken else 0

    def category_counts(self) -> dict[str, int]:
        counts = Counter(f.category for f in self.findings)
        return {category: counts.get(category, 0) for category in BROKEN_CATEGORIES}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.broken,
            "categories": self.category_counts(),
            "findings": [f.as_dict() for f in self.findings],
            "notes": [n.as_dict() for n in self.notes],
            "counts": {name: dict(states) for name, states in self.counts.items()},
            "billers": {code: totals.as_dict() for code, totals in self.billers.items()},
        }
