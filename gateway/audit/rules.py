"""The audit's invariants, as pure functions: rows in, findings out.

Each ``_..._findings`` function checks one family of promises across the
journal, the billers' ledgers and the SMS outbox; :func:`audit` runs them
all.  No I/O here, so every rule is tested on rows built by hand.

(The SMS receipts' rules are :mod:`.sms_rules`, contract v2's
:mod:`.accepted`; the report's counts and totals :mod:`.totals`.)
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Mapping, Sequence

from billgw.billing_adapters.interface import LedgerEntry as Posting  # any adapter's ledger entry

from ..states import UNSETTLED, State
from . import accepted as accepted_rules
from .details import _finding, _mask_foreign, _posting_details  # noqa: F401 -- _mask_foreign: command.py
from .rows import (
    ADVISED_NOT_HELD,
    AMOUNT_MISMATCH,
    BROKEN_CATEGORIES,
    CONFIRMED_AFTER_REVERSAL,
    CONFIRMED_MISSING_AT_BILLER,
    EXCEPTION,
    NOTE_CATEGORIES,
    POSTED_OUTSIDE_RULES,
    POSTED_TWICE,
    REVERSAL_MISSED_ORIGINAL,
    REVERSAL_NOT_FOUND,
    REVERSED_STILL_POSTED,
    UNKNOWN_POSTING,
    UNRESOLVED,
    AuditReport,
    BillerOutboxRow,
    Finding,
    JournalRow,
    ReversalRow,
    SmsRow,
)
from .sms_rules import _sms_findings
from .totals import _counts, _totals_and_unaudited

# A payment's rules as the configuration states them now: the broken rule's
# name, or None (see :func:`billgw.gateway.rules.check_request`).
RuleCheck = Callable[[JournalRow], "str | None"]

# Payment states in which the gateway still owes the payment an outcome.
UNSETTLED_STATES = frozenset(state.value for state in UNSETTLED)
# Payment states after which the biller must hold no live posting.
UNDONE_STATES = frozenset({State.REVERSED.value, State.DECLINED.value})

_REVERSAL_NOT_FOUND = "NOT_FOUND"
_REVERSAL_EXCEPTION = "EXCEPTION"
_OUTBOX_PENDING = "PENDING"
_OUTBOX_EXPIRED = "EXPIRED"
# Payment states in which the biller holds, or is being asked to hold, it.
_POSTED_OR_POSTING = frozenset({State.POSTING.value, State.IN_DOUBT.value, State.CONFIRMED.value,
                                State.ACCEPTED.value})


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
        live = [(b, p) for b, p in entries if p.held]
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
        live = [p for p in own if p.held]
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
                           "holds only a reversed (or rejected) posting: the customer was told \"paid\" and the "
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
        if item.state == _OUTBOX_PENDING and row is not None and row.state == State.ACCEPTED.value:
            continue  # polling for the biller's batch: judged by the ACCEPTED rules (audit/accepted.py)
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
    original never reached us (NOT_FOUND) is expected and only noted -- but
    a NOT_FOUND whose original IS in the journal means the two were
    journaled blind to each other; and a payment the switch reversed must
    never stay CONFIRMED."""
    findings, notes = [], []
    by_keys = {row.acquirer_keys: row for row in journal.values()}
    reversed_ids = set()
    for rev in reversal_rows:
        extra = {"reversal_id": rev.id, "reversal_state": rev.state, "reversal_amount": rev.amount,
                 "orig_acquirer_id": rev.orig_acquirer_id, "orig_terminal_id": rev.orig_terminal_id,
                 "orig_stan": rev.orig_stan, "orig_transmission_dt": rev.orig_transmission_dt}
        row = journal.get(rev.transaction_id) if rev.transaction_id else None
        if row is not None:
            reversed_ids.add(row.id)
        if rev.state == _REVERSAL_NOT_FOUND:
            original = by_keys.get((rev.orig_acquirer_id, rev.orig_terminal_id, rev.orig_stan,
                                    rev.orig_transmission_dt))
            if original is not None:
                reversed_ids.add(original.id)
                findings.append(_finding(
                    REVERSAL_MISSED_ORIGINAL, original, original.id,
                    f"Reversal {rev.id} of {rev.amount} was recorded NOT_FOUND and acknowledged, but "
                    f"its original {original.id} (terminal {rev.orig_terminal_id}, STAN "
                    f"{rev.orig_stan}) is in the journal as {original.state}: the switch refunded the "
                    "customer for a payment the gateway may have posted.", **extra))
                continue
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
    for row in journal.values():
        if row.state == State.CONFIRMED.value and (row.reversal_requested or row.id in reversed_ids):
            findings.append(_finding(
                CONFIRMED_AFTER_REVERSAL, row, row.id,
                f"Payment {row.id} is CONFIRMED although the switch's reversal of it was "
                "acknowledged: the customer was refunded and the biller keeps the money."))
    return findings, notes


def _rules_findings(journal: Mapping[str, JournalRow], ledgers: Mapping[str, Sequence[Posting]],
                    check: RuleCheck | None) -> list[Finding]:
    """A payment that breaks its service's local rules must never be posted:
    not by the in-line path, not by an advice.  The rule the gateway found
    broken when it journaled the payment is trusted first; ``check`` also
    applies the rules as configured now, which catches what let it by."""
    held_at_biller = {p.payment_id for postings in ledgers.values() for p in postings if p.held}
    findings = []
    for row in journal.values():
        if row.kind != "payment":
            continue
        held = row.state in _POSTED_OR_POSTING or row.id in held_at_biller
        if not held:
            continue
        problem = row.local_problem or (check(row) if check is not None else None)
        if problem is None:
            continue
        findings.append(_finding(
            POSTED_OUTSIDE_RULES, row, row.id,
            f"Payment {row.id} breaks the rules of service {row.biller_code}/{row.service_code} "
            f"({problem}), yet it is {row.state}"
            + (" and held by the biller" if row.id in held_at_biller else "")
            + ": the gateway declines such a payment and never posts it.", rule=problem))
    return findings


def audit(journal_rows: Sequence[JournalRow], ledgers: Mapping[str, Sequence[Posting]],
          sms_rows: Sequence[SmsRow], reversal_rows: Sequence[ReversalRow],
          outbox_rows: Sequence[BillerOutboxRow], *, rules: RuleCheck | None = None,
          now: float | None = None, accepted_limit: float | None = None) -> AuditReport:
    """Every broken invariant across the journal, the ledgers given and the
    SMS outbox.  ``ledgers`` maps a biller code to that biller's postings;
    billers without an entry are only checked on the gateway's side.
    ``rules`` re-checks a payment against its service's configured rules.
    ``now`` and ``accepted_limit`` (seconds): a payment ACCEPTED for longer
    is flagged (its biller's batch is not booking it).

    Pure: no I/O, so the rules are tested on plain rows.  Findings come out
    grouped by category (in :data:`BROKEN_CATEGORIES` order), then by payment.
    """
    journal = {}
    for row in journal_rows:
        journal.setdefault(row.id, row)
    findings = _duplicate_keys(journal_rows)
    findings += _ledger_findings(journal, ledgers)
    findings += _state_findings(journal)
    findings += _rules_findings(journal, ledgers, rules)
    accepted_findings = accepted_rules.findings(journal, ledgers, now=now, limit=accepted_limit)
    findings += [f for f in accepted_findings if f.category not in NOTE_CATEGORIES]
    notes_accepted = [f for f in accepted_findings if f.category in NOTE_CATEGORIES]
    findings += _outbox_findings(journal, outbox_rows)
    reversal_findings, notes = _reversal_findings(journal, reversal_rows)
    findings += reversal_findings
    sms_findings = _sms_findings(journal, sms_rows)
    findings += [f for f in sms_findings if f.category not in NOTE_CATEGORIES]
    notes += [f for f in sms_findings if f.category in NOTE_CATEGORIES] + notes_accepted
    totals, unaudited_notes = _totals_and_unaudited(journal_rows, ledgers)
    order = {category: i for i, category in enumerate(BROKEN_CATEGORIES + NOTE_CATEGORIES)}
    key = lambda f: (order[f.category], f.payment_id or "", f.biller_code or "")  # noqa: E731
    return AuditReport(
        findings=tuple(sorted(findings, key=key)),
        notes=tuple(sorted(notes + unaudited_notes, key=key)),
        counts=_counts(journal_rows, sms_rows, reversal_rows, outbox_rows),
        billers=totals,
    )
