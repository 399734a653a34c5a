"""``billgw audit``: the journal against the billers' ledgers and the SMS outbox.

The gateway promises never to lose a payment, post it twice, or tell a
customer "paid" when the biller has no record of it.  Each promise spans
stores written at different moments by different parties -- our journal,
each biller's own ledger, the SMS outbox -- so a crash, a timeout or a bug
can break one without any single component noticing.  Only comparing the
stores after the fact shows it; this module does that comparison and names
every payment that breaks an invariant, so a person can act on it.

Layers, so that the rules can be tested without databases or files:

- plain dataclasses of what was read (:class:`JournalRow`, :class:`SmsRow`,
  :class:`ReversalRow`, :class:`BillerOutboxRow`; ledgers are lists of the
  simulator's :class:`Posting`, the auditor's view of a biller's ledger);
- :func:`audit`, pure: rows in, :class:`AuditReport` out;
- :func:`load_journal`, a thin blocking loader reading the journal's tables
  in one read transaction (one consistent snapshot);
- :data:`LEDGER_READERS`, one ledger reader per biller adapter kind;
- :func:`render_text` / :func:`render_json` and :func:`run_command`, the CLI.

The audit is an offline tool: it blocks, and needs no reactor.  Card data:
the journal holds only the masked PAN, and every value shown is passed
through the project's masking again, because output of an audit ends up in
tickets and e-mails where a leaked card number would stay.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from billgw.billing_adapters.telecom_sim import Posting, read_ledger
from billgw.iso8583.masking import mask_pan, mask_text
from billgw.sms.outbox import OutboxKind, OutboxState, sms_outbox

from .schema import biller_outbox, reversals, transactions
from .states import UNSETTLED, State

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

# Every category here breaks an invariant: any finding makes the exit status 1.
# The order is the order of the summary (money first, then SMS).
BROKEN_CATEGORIES = (
    POSTED_TWICE,
    CONFIRMED_MISSING_AT_BILLER,
    ADVISED_NOT_HELD,
    AMOUNT_MISMATCH,
    REVERSED_STILL_POSTED,
    UNKNOWN_POSTING,
    UNRESOLVED,
    EXCEPTION,
    SMS_FOR_UNCONFIRMED,
    SMS_MISSING,
    SMS_ABANDONED,
)

# Informational: printed, never a reason for exit status 1.
REVERSAL_NOT_FOUND = "reversal_not_found"
NOT_AUDITED = "not_audited"
# A receipt whose sender died mid-submit: maybe on the phone, never resent.
SMS_UNCERTAIN = "sms_uncertain"
NOTE_CATEGORIES = (REVERSAL_NOT_FOUND, NOT_AUDITED, SMS_UNCERTAIN)

# Payment states in which the gateway still owes the payment an outcome.
UNSETTLED_STATES = frozenset(state.value for state in UNSETTLED)
# Payment states after which the biller must hold no live posting.
UNDONE_STATES = frozenset({State.REVERSED.value, State.DECLINED.value})

# SMS rows that have gone, are going, or will go to the subscriber's phone.
_SMS_LIVE = frozenset({OutboxState.QUEUED.value, OutboxState.SENDING.value, OutboxState.SENT.value,
                       OutboxState.FAILED.value, OutboxState.UNCERTAIN.value})
# A receipt in these states may already be on the subscriber's phone.
_SMS_MAYBE_DELIVERED = frozenset({OutboxState.SENT.value, OutboxState.SENDING.value,
                                  OutboxState.UNCERTAIN.value})

_REVERSAL_NOT_FOUND = "NOT_FOUND"
_REVERSAL_EXCEPTION = "EXCEPTION"
_OUTBOX_PENDING = "PENDING"
_OUTBOX_EXPIRED = "EXPIRED"


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


# --- the rules (pure) ---------------------------------------------------------

def _payment_details(row: JournalRow) -> dict[str, Any]:
    return {"kind": row.kind, "state": row.state, "amount": row.amount, "currency": row.currency,
            "masked_pan": mask_pan(row.masked_pan), "rrn": row.rrn, "terminal_id": row.terminal_id}


_LONG_DIGITS = re.compile(r"\d{13,}")


def _mask_foreign(text: object) -> str:
    """Free text from another system (a biller's ledger or error message).

    ``mask_text`` masks a PAN only when it stands apart from other digits;
    text we did not write may run a PAN into other digits (a raw frame's
    length prefix), so any run of 13 or more digits is also cut to its first
    6 and last 4 -- an audit line loses nothing it needs by that.
    """
    return _LONG_DIGITS.sub(lambda m: m[0][:6] + "*" * (len(m[0]) - 10) + m[0][-4:], mask_text(str(text)))


def _posting_details(biller: str, posting: Posting) -> dict[str, Any]:
    return {"ledger": biller, "ledger_amount": posting.amount, "ledger_reversed": posting.reversed,
            "receipt_number": _mask_foreign(posting.receipt_number),
            "bill_number": _mask_foreign(posting.bill_number), "posted_at": posting.posted_at}


def _finding(category: str, row: JournalRow | None, payment_id: str | None, message: str,
             **extra: Any) -> Finding:
    details = _payment_details(row) if row is not None else {}
    details.update(extra)
    return Finding(category, payment_id, message, row.biller_code if row is not None else None, details)


def _duplicate_keys(journal_rows: Sequence[JournalRow]) -> list[Finding]:
    """Two journal rows under one set of acquirer keys: the UNIQUE constraint
    should make this impossible, so seeing it means the constraint is gone."""
    first_by_keys: dict[tuple[str, str, str, str], JournalRow] = {}
    findings = []
    for row in journal_rows:
        first = first_by_keys.setdefault(row.acquirer_keys, row)
        if first is not row:
            findings.append(_finding(
                POSTED_TWICE, row, row.id,
                f"{row.kind.capitalize()} {row.id} has the same acquirer keys as {first.id} "
                "(acquirer, terminal, STAN, transmission time): the switch's one request was "
                "journaled twice.",
                same_keys_as=first.id))
    return findings


def _ledger_findings(journal: Mapping[str, JournalRow],
                     ledgers: Mapping[str, Sequence[Posting]]) -> list[Finding]:
    """Compare every audited biller's ledger with the journal, both ways."""
    findings: list[Finding] = []
    by_payment: dict[str, list[tuple[str, Posting]]] = defaultdict(list)
    for biller, postings in ledgers.items():
        for posting in postings:
            by_payment[posting.payment_id].append((biller, posting))

    # Ledger -> journal: each posting must belong to a payment the journal
    # knows, at this biller, once.
    for payment_id, entries in by_payment.items():
        row = journal.get(payment_id)
        live = [(b, p) for b, p in entries if not p.reversed]
        ledger_billers = sorted({b for b, _ in entries})
        twice = len(live) > 1 or len(ledger_billers) > 1
        if twice:
            where = ", ".join(f"{b} ({'reversed' if p.reversed else 'posted'} {p.amount})" for b, p in entries)
            findings.append(_finding(
                POSTED_TWICE, row, payment_id,
                f"Payment {payment_id} appears {len(entries)} times in the billers' ledgers, "
                f"{len(live)} of them not reversed: {where}.",
                ledgers=ledger_billers, live_postings=len(live)))
        for biller, posting in entries:
            if row is None:
                findings.append(Finding(
                    UNKNOWN_POSTING, payment_id,
                    f"{biller}'s ledger holds a {'reversed ' if posting.reversed else ''}posting "
                    f"of {posting.amount} for payment {payment_id}, which the journal does not know.",
                    biller, _posting_details(biller, posting)))
            elif row.biller_code != biller and not twice:
                findings.append(_finding(
                    UNKNOWN_POSTING, row, payment_id,
                    f"{biller}'s ledger holds payment {payment_id}, but the journal has it for "
                    f"biller {row.biller_code}.",
                    **_posting_details(biller, posting)))

    # Journal -> ledger, for payments (and inquiries) of audited billers.
    for row in journal.values():
        if row.biller_code not in ledgers:
            continue
        own = [p for b, p in by_payment.get(row.id, ()) if b == row.biller_code]
        live = [p for p in own if not p.reversed]
        if row.kind != "payment":
            for posting in live:
                findings.append(_finding(
                    REVERSED_STILL_POSTED, row, row.id,
                    f"{row.id} was only an inquiry, yet {row.biller_code} holds a posting of "
                    f"{posting.amount} under its id.",
                    **_posting_details(row.biller_code, posting)))
            continue
        if row.state == State.CONFIRMED.value and not live:
            if own:
                message = (f"Payment {row.id} is CONFIRMED in the journal, but {row.biller_code} "
                           "holds only a reversed posting: the customer was told \"paid\" and the "
                           "biller has undone it.")
                extra = _posting_details(row.biller_code, own[0])
            else:
                message = (f"Payment {row.id} is CONFIRMED in the journal, but {row.biller_code} "
                           "has no posting for it: the customer was told \"paid\" and the biller "
                           "has no record.")
                extra = {"ledger": row.biller_code}
            findings.append(_finding(CONFIRMED_MISSING_AT_BILLER, row, row.id, message, **extra))
        if row.state in UNDONE_STATES:
            for posting in live:
                findings.append(_finding(
                    REVERSED_STILL_POSTED, row, row.id,
                    f"Payment {row.id} is {row.state} in the journal, but {row.biller_code} "
                    f"still holds a posting of {posting.amount} that is not reversed.",
                    **_posting_details(row.biller_code, posting)))
            continue
        for posting in live:
            if posting.amount != row.amount:
                findings.append(_finding(
                    AMOUNT_MISMATCH, row, row.id,
                    f"Payment {row.id} is for {row.amount} in the journal, but "
                    f"{row.biller_code} posted {posting.amount}.",
                    **_posting_details(row.biller_code, posting)))
    return findings


def _state_findings(journal: Mapping[str, JournalRow]) -> list[Finding]:
    findings = []
    for row in journal.values():
        if row.kind == "payment" and row.state in UNSETTLED_STATES:
            findings.append(_finding(
                UNRESOLVED, row, row.id,
                f"Payment {row.id} is still {row.state}: the gateway has not settled whether the "
                "biller holds it."))
        elif (row.kind == "payment" and row.advice_received and not row.reversal_requested
              and row.state in UNDONE_STATES):
            findings.append(_finding(
                ADVISED_NOT_HELD, row, row.id,
                f"Payment {row.id} is {row.state} although the switch advised (0220) that it debited "
                "the customer and never reversed it: the customer paid and the biller holds nothing."))
        elif row.state == State.EXCEPTION.value:
            findings.append(_finding(
                EXCEPTION, row, row.id,
                f"{row.kind.capitalize()} {row.id} is in EXCEPTION: a person must decide what the "
                "biller and the customer are owed."))
    return findings


def _outbox_findings(journal: Mapping[str, JournalRow], outbox_rows: Iterable[BillerOutboxRow]) -> list[Finding]:
    findings = []
    for item in outbox_rows:
        row = journal.get(item.transaction_id)
        extra = {"outbox_id": item.id, "action": item.action, "outbox_state": item.state,
                 "attempts": item.attempts}
        if item.last_error:
            extra["last_error"] = _mask_foreign(item.last_error)
        if item.state == _OUTBOX_PENDING:
            findings.append(_finding(
                UNRESOLVED, row, item.transaction_id,
                f"A {item.action} towards the biller for {item.transaction_id} is still pending "
                f"after {item.attempts} attempt(s).", **extra))
        elif item.state == _OUTBOX_EXPIRED:
            findings.append(_finding(
                EXCEPTION, row, item.transaction_id,
                f"The {item.action} towards the biller for {item.transaction_id} expired after "
                f"{item.attempts} attempt(s): a person must finish it.", **extra))
    return findings


def _reversal_findings(journal: Mapping[str, JournalRow],
                       reversal_rows: Iterable[ReversalRow]) -> tuple[list[Finding], list[Finding]]:
    """(findings, notes): a reversal in EXCEPTION needs a person; one whose
    original never reached us (NOT_FOUND) is expected and only noted."""
    findings, notes = [], []
    for rev in reversal_rows:
        extra = {"reversal_id": rev.id, "reversal_state": rev.state, "reversal_amount": rev.amount,
                 "orig_acquirer_id": rev.orig_acquirer_id, "orig_terminal_id": rev.orig_terminal_id,
                 "orig_stan": rev.orig_stan, "orig_transmission_dt": rev.orig_transmission_dt}
        row = journal.get(rev.transaction_id) if rev.transaction_id else None
        if rev.state == _REVERSAL_NOT_FOUND:
            notes.append(_finding(
                REVERSAL_NOT_FOUND, row, rev.transaction_id,
                f"Reversal {rev.id} of {rev.amount} names an original (terminal "
                f"{rev.orig_terminal_id}, STAN {rev.orig_stan}, {rev.orig_transmission_dt}) the "
                "gateway never saw; expected when the switch reversed a payment that never "
                "reached us.", **extra))
        elif rev.state == _REVERSAL_EXCEPTION:
            findings.append(_finding(
                EXCEPTION, row, rev.transaction_id,
                f"Reversal {rev.id} of {rev.amount} is in EXCEPTION (the biller could not undo "
                "the payment): the customer may be owed a manual refund.", **extra))
    return findings, notes


def _sms_findings(journal: Mapping[str, JournalRow], sms_rows: Iterable[SmsRow]) -> list[Finding]:
    """Exactly one receipt per confirmed payment, none for anything else;
    a reversal notice exactly when a reversed payment's receipt may have gone."""
    findings = []
    by_payment: dict[str, dict[str, SmsRow]] = defaultdict(dict)
    for sms in sms_rows:
        by_payment[sms.payment_id][sms.kind] = sms
    receipt_kind, notice_kind = OutboxKind.RECEIPT.value, OutboxKind.REVERSAL_NOTICE.value

    for payment_id, kinds in by_payment.items():
        row = journal.get(payment_id)
        state = row.state if row is not None else None
        if row is None:
            described = "payment the journal does not know"
        else:
            described = f"{row.kind} in state {state}"
        receipt, notice = kinds.get(receipt_kind), kinds.get(notice_kind)
        for sms in (receipt, notice):
            if sms is None:
                continue
            extra = {"sms_id": sms.id, "sms_kind": sms.kind, "sms_state": sms.state,
                     "sms_attempts": sms.attempts}
            if sms.state == OutboxState.UNCERTAIN.value:
                findings.append(_finding(
                    SMS_UNCERTAIN, row, payment_id,
                    f"The {sms.kind.replace('_', ' ')} SMS for {payment_id} was being sent when its "
                    "sender stopped; the SMSC may or may not have it, and it is not sent again.",
                    **extra))
            if sms.state == OutboxState.ABANDONED.value:
                findings.append(_finding(
                    SMS_ABANDONED, row, payment_id,
                    f"The {sms.kind.replace('_', ' ')} SMS for {payment_id} was abandoned after "
                    f"{sms.attempts} attempt(s): the subscriber was never told.", **extra))
        if receipt is not None and receipt.state in _SMS_LIVE and state != State.CONFIRMED.value:
            reversed_after_receipt = (state == State.REVERSED.value
                                      and receipt.state in _SMS_MAYBE_DELIVERED)
            # A receipt that left before the reversal is legitimate; a missing
            # reversal notice for it is reported below as sms_missing.
            if not reversed_after_receipt:
                findings.append(_finding(
                    SMS_FOR_UNCONFIRMED, row, payment_id,
                    f"A receipt SMS ({receipt.state}) exists for {payment_id} ({described}): "
                    "the subscriber may be told \"paid\" for a payment that is not.",
                    sms_id=receipt.id, sms_kind=receipt.kind, sms_state=receipt.state))
        if notice is not None and notice.state in _SMS_LIVE and state != State.REVERSED.value:
            findings.append(_finding(
                SMS_FOR_UNCONFIRMED, row, payment_id,
                f"A reversal notice SMS ({notice.state}) exists for {payment_id} ({described}).",
                sms_id=notice.id, sms_kind=notice.kind, sms_state=notice.state))

    for row in journal.values():
        if row.kind != "payment":
            continue
        kinds = by_payment.get(row.id, {})
        receipt, notice = kinds.get(receipt_kind), kinds.get(notice_kind)
        if row.state == State.CONFIRMED.value and row.msisdn:
            if receipt is None:
                findings.append(_finding(
                    SMS_MISSING, row, row.id,
                    f"Payment {row.id} is CONFIRMED with a phone number for its receipt, but no "
                    "receipt SMS was ever queued."))
            elif receipt.state == OutboxState.CANCELLED.value:
                findings.append(_finding(
                    SMS_MISSING, row, row.id,
                    f"Payment {row.id} is CONFIRMED, but its receipt SMS was cancelled.",
                    sms_id=receipt.id, sms_kind=receipt.kind, sms_state=receipt.state))
        if (row.state == State.REVERSED.value and receipt is not None
                and receipt.state in _SMS_MAYBE_DELIVERED and notice is None):
            findings.append(_finding(
                SMS_MISSING, row, row.id,
                f"Payment {row.id} was REVERSED after its receipt SMS went out ({receipt.state}), "
                "but no reversal notice was queued: the subscriber still believes it paid.",
                sms_id=receipt.id, sms_kind=receipt.kind, sms_state=receipt.state))
    return findings


def _counts(journal_rows, sms_rows, reversal_rows, outbox_rows) -> dict[str, dict[str, int]]:
    counters: dict[str, Counter] = defaultdict(Counter)
    for row in journal_rows:
        counters[row.kind][row.state] += 1
    for rev in reversal_rows:
        counters["reversal"][rev.state] += 1
    for item in outbox_rows:
        counters["biller_outbox"][item.state] += 1
    for sms in sms_rows:
        counters[f"sms_{sms.kind}"][sms.state] += 1
    return {name: dict(sorted(counter.items())) for name, counter in sorted(counters.items())}


def _totals_and_unaudited(journal_rows: Sequence[JournalRow], ledgers: Mapping[str, Sequence[Posting]]
                          ) -> tuple[dict[str, BillerTotals], list[Finding]]:
    confirmed: dict[str, list[int]] = defaultdict(list)
    unaudited: dict[str, list[JournalRow]] = defaultdict(list)
    billers = set(ledgers)
    for row in journal_rows:
        if row.kind != "payment":
            continue
        code = row.biller_code or "-"
        billers.add(code)
        if row.state == State.CONFIRMED.value:
            confirmed[code].append(row.amount)
        if code not in ledgers:
            unaudited[code].append(row)
    totals = {}
    for code in sorted(billers):
        live = [p.amount for p in ledgers[code] if not p.reversed] if code in ledgers else None
        totals[code] = BillerTotals(
            biller_code=code, audited=code in ledgers,
            journal_confirmed_count=len(confirmed[code]), journal_confirmed_amount=sum(confirmed[code]),
            ledger_posted_count=None if live is None else len(live),
            ledger_posted_amount=None if live is None else sum(live))
    notes = [
        Finding(NOT_AUDITED, None,
                f"{len(rows)} payment(s) of biller {code} were not compared with a ledger "
                f"(no --ledger {code}=...); their states and SMS were still checked.",
                code, {"payments": len(rows)})
        for code, rows in sorted(unaudited.items())
    ]
    return totals, notes


def audit(journal_rows: Sequence[JournalRow], ledgers: Mapping[str, Sequence[Posting]],
          sms_rows: Sequence[SmsRow], reversal_rows: Sequence[ReversalRow],
          outbox_rows: Sequence[BillerOutboxRow]) -> AuditReport:
    """Every broken invariant across the journal, the ledgers given and the
    SMS outbox.  ``ledgers`` maps a biller code to that biller's postings;
    billers without an entry are only checked on the gateway's side.

    Pure: no I/O, so the rules are tested on plain rows.  Findings come out
    grouped by category (in :data:`BROKEN_CATEGORIES` order), then by payment.
    """
    journal = {}
    for row in journal_rows:
        journal.setdefault(row.id, row)
    findings = _duplicate_keys(journal_rows)
    findings += _ledger_findings(journal, ledgers)
    findings += _state_findings(journal)
    findings += _outbox_findings(journal, outbox_rows)
    reversal_findings, notes = _reversal_findings(journal, reversal_rows)
    findings += reversal_findings
    sms_findings = _sms_findings(journal, sms_rows)
    findings += [f for f in sms_findings if f.category not in NOTE_CATEGORIES]
    notes += [f for f in sms_findings if f.category in NOTE_CATEGORIES]
    totals, unaudited_notes = _totals_and_unaudited(journal_rows, ledgers)
    order = {category: i for i, category in enumerate(BROKEN_CATEGORIES + NOTE_CATEGORIES)}
    key = lambda f: (order[f.category], f.payment_id or "", f.biller_code or "")  # noqa: E731
    return AuditReport(
        findings=tuple(sorted(findings, key=key)),
        notes=tuple(sorted(notes + unaudited_notes, key=key)),
        counts=_counts(journal_rows, sms_rows, reversal_rows, outbox_rows),
        billers=totals,
    )


# --- reading the stores (blocking) --------------------------------------------

def make_audit_engine(url: str) -> Engine:
    """An engine for reading the journal while the gateway runs.

    SQLite: a plain deferred ``BEGIN`` is a consistent read snapshot under
    WAL without taking the write lock (the gateway's own engine begins with
    ``BEGIN IMMEDIATE``, which would stall its writers for the whole read),
    and ``query_only`` guarantees the audit never writes.  PostgreSQL gets
    its snapshot from :func:`load_journal`'s REPEATABLE READ transaction.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def load_journal(engine: Engine) -> JournalSnapshot:
    """Read the four tables in one read transaction, so that a payment, its
    SMS rows and its outbox items are seen as of the same moment (otherwise
    a payment confirmed between two SELECTs would look like a broken one).

    Read the journal *before* the ledgers: the gateway confirms only after
    the biller posted, so a payment CONFIRMED in the snapshot is already in
    a ledger read later.  One race remains: a payment reversed between the
    two reads looks CONFIRMED here and reversed at the biller, so a
    ``confirmed_missing_at_biller`` on a busy system is worth a second run.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            t = transactions
            txns = tuple(
                JournalRow(id=r.id, kind=r.kind, state=r.state, amount=r.amount, biller_code=r.biller_code,
                           currency=r.currency, masked_pan=r.masked_pan, msisdn=r.msisdn,
                           acquirer_id=r.acquirer_id, terminal_id=r.terminal_id, stan=r.stan,
                           transmission_dt=r.transmission_dt, rrn=r.rrn, biller_receipt=r.biller_receipt,
                           advice_received=bool(r.advice_received),
                           reversal_requested=bool(r.reversal_requested))
                for r in conn.execute(select(
                    t.c.id, t.c.kind, t.c.state, t.c.amount, t.c.biller_code, t.c.currency, t.c.masked_pan,
                    t.c.msisdn, t.c.acquirer_id, t.c.terminal_id, t.c.stan, t.c.transmission_dt, t.c.rrn,
                    t.c.biller_receipt, t.c.advice_received, t.c.reversal_requested)
                    .order_by(t.c.created_at, t.c.id)))
            s = sms_outbox
            sms = tuple(
                SmsRow(id=r.id, payment_id=r.payment_id, kind=r.kind, state=r.state, attempts=r.attempts)
                for r in conn.execute(select(s.c.id, s.c.payment_id, s.c.kind, s.c.state, s.c.attempts)
                                      .order_by(s.c.id)))
            rv = reversals
            revs = tuple(
                ReversalRow(id=r.id, transaction_id=r.transaction_id, state=r.state, amount=r.amount,
                            orig_acquirer_id=r.orig_acquirer_id, orig_terminal_id=r.orig_terminal_id,
                            orig_stan=r.orig_stan, orig_transmission_dt=r.orig_transmission_dt,
                            currency=r.currency)
                for r in conn.execute(select(
                    rv.c.id, rv.c.transaction_id, rv.c.state, rv.c.amount, rv.c.orig_acquirer_id,
                    rv.c.orig_terminal_id, rv.c.orig_stan, rv.c.orig_transmission_dt, rv.c.currency)
                    .order_by(rv.c.id)))
            b = biller_outbox
            items = tuple(
                BillerOutboxRow(id=r.id, transaction_id=r.transaction_id, action=r.action, state=r.state,
                                attempts=r.attempts, last_error=r.last_error)
                for r in conn.execute(select(b.c.id, b.c.transaction_id, b.c.action, b.c.state,
                                             b.c.attempts, b.c.last_error).order_by(b.c.id)))
    return JournalSnapshot(txns, sms, revs, items)


LedgerReader = Callable[[str], list[Posting]]

# Keyed by the biller's adapter kind (``billers.<CODE>.adapter`` in the
# configuration).  A new biller kind adds its reader here, returning the
# same Posting records, and ``billgw audit`` compares it with no other change.
LEDGER_READERS: dict[str, LedgerReader] = {
    "telecom_soap": read_ledger,
}


# --- output -------------------------------------------------------------------

def _detail_text(details: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in details.items() if value not in (None, ""))


def _finding_line(finding: Finding, width: int) -> str:
    return (f"  {finding.category:<{width}}  {finding.payment_id or '-'}  {finding.biller_code or '-'}  "
            f"{finding.message}  [{_detail_text(finding.details)}]")


def render_text(report: AuditReport) -> str:
    """For a person: the verdict, a line per category, a line per finding,
    then the informational part (notes, totals, states)."""
    lines = []
    if report.broken:
        lines.append(f"billgw audit: BROKEN -- {len(report.findings)} finding(s)")
    else:
        lines.append("billgw audit: OK -- no invariant broken")
    width = max(len(c) for c in BROKEN_CATEGORIES + NOTE_CATEGORIES)
    for category, count in report.category_counts().items():
        lines.append(f"  {category:<{width}}  {count}")
    if report.findings:
        lines.append("")
        lines.append("findings:")
        lines.extend(_finding_line(f, width) for f in report.findings)
    lines.append("")
    lines.append("information (not broken):")
    lines.extend(_finding_line(n, width) for n in report.notes)
    for code, totals in report.billers.items():
        journal_part = (f"journal confirmed {totals.journal_confirmed_count} payment(s), "
                        f"{totals.journal_confirmed_amount} minor units")
        if totals.audited:
            ledger_part = (f"ledger posted {totals.ledger_posted_count} payment(s), "
                           f"{totals.ledger_posted_amount} minor units")
        else:
            ledger_part = "ledger not audited"
        lines.append(f"  totals {code}: {journal_part}; {ledger_part}")
    for name, states in report.counts.items():
        lines.append(f"  states {name}: " + ", ".join(f"{state} {n}" for state, n in states.items()))
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


# --- the command --------------------------------------------------------------

class AuditUsageError(ValueError):
    """The command line or the files it names cannot be used (exit status 2)."""


def parse_ledger_args(values: Sequence[str], settings) -> dict[str, tuple[str, LedgerReader]]:
    """``CODE=PATH`` arguments -> {biller code: (path, reader)}, checked
    against the configuration before anything is read."""
    chosen: dict[str, tuple[str, LedgerReader]] = {}
    for value in values:
        code, sep, path = value.partition("=")
        code, path = code.strip(), path.strip()
        if not sep or not code or not path:
            raise AuditUsageError(f"--ledger {value!r}: expected CODE=PATH, e.g. TEL=var/telecom-sim.sqlite")
        if code not in settings.billers:
            known = ", ".join(sorted(settings.billers)) or "none"
            raise AuditUsageError(f"--ledger {code}: no biller {code} in {settings.source} (billers: {known})")
        if code in chosen:
            raise AuditUsageError(f"--ledger {code}: given twice")
        kind = settings.billers[code].adapter
        reader = LEDGER_READERS.get(kind)
        if reader is None:
            raise AuditUsageError(f"--ledger {code}: no ledger reader for adapter kind {kind!r} "
                                  f"(readers: {', '.join(sorted(LEDGER_READERS))})")
        if not os.path.isfile(path):
            raise AuditUsageError(f"--ledger {code}: no ledger file at {path}")
        chosen[code] = (path, reader)
    if not chosen:
        raise AuditUsageError("give at least one --ledger CODE=PATH")
    return chosen


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return _mask_foreign(f"{type(cause).__name__}: {text[0] if text else ''}")


def run_command(settings, ledger_args: Sequence[str], *, as_json: bool = False,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``billgw audit``: returns the exit status (0 clean, 1 broken, 2 usage).

    The journal is read before the ledgers (see :func:`load_journal`).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        chosen = parse_ledger_args(ledger_args, settings)
        engine = make_audit_engine(settings.database.url)
        shown_url = engine.url.render_as_string(hide_password=True)
        try:
            database = engine.url.database
            if engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:") \
                    and not os.path.isfile(database):
                raise AuditUsageError(f"journal database {database} does not exist (database.url in "
                                      f"{settings.source})")
            try:
                snapshot = load_journal(engine)
            except SQLAlchemyError as exc:
                raise AuditUsageError(f"cannot read the journal at {shown_url} ({_first_line(exc)}); "
                                      "is its schema up to date (billgw db upgrade)?") from None
        finally:
            engine.dispose()
        ledgers = {}
        for code, (path, reader) in chosen.items():
            try:
                ledgers[code] = reader(path)
            except (sqlite3.Error, OSError) as exc:
                raise AuditUsageError(f"--ledger {code}: cannot read ledger {path} ({_first_line(exc)})") from None
    except AuditUsageError as exc:
        print(f"billgw audit: {exc}", file=err)
        return 2
    report = audit(snapshot.transactions, ledgers, snapshot.sms, snapshot.reversals, snapshot.biller_outbox)
    out.write(render_json(report) if as_json else render_text(report))
    out.flush()
    return report.exit_status


__all__ = [
    "AuditReport", "AuditUsageError", "BROKEN_CATEGORIES", "BillerOutboxRow", "BillerTotals", "Finding",
    "JournalRow", "JournalSnapshot", "LEDGER_READERS", "NOTE_CATEGORIES", "ReversalRow", "SmsRow", "audit",
    "load_journal", "make_audit_engine", "parse_ledger_args", "render_json", "render_text", "run_command",
]
