"""The audit's invariants, as pure functions: rows in, findings out.

Each ``_..._findings`` function checks one family of promises across the
journal, the billers' ledgers and the SMS outbox; :func:`audit` runs them
all.  No I/O here, so every rule is tested on rows built by hand.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence

from billgw.billing_adapters.interface import LedgerEntry as Posting  # any adapter's ledger entry
from billgw.iso8583.masking import mask_pan, mask_text
from billgw.sms.outbox import OutboxKind, OutboxState

from ..states import UNSETTLED, State
from . import accepted as accepted_rules
from .rows import (
    ADVISED_NOT_HELD,
    AMOUNT_MISMATCH,
    BROKEN_CATEGORIES,
    CONFIRMED_AFTER_REVERSAL,
    CONFIRMED_MISSING_AT_BILLER,
    EXCEPTION,
    NOT_AUDITED,
    NOTE_CATEGORIES,
    POSTED_OUTSIDE_RULES,
    POSTED_TWICE,
    REVERSAL_MISSED_ORIGINAL,
    REVERSAL_NOT_FOUND,
    REVERSED_STILL_POSTED,
    SMS_ABANDONED,
    SMS_FOR_UNCONFIRMED,
    SMS_MISSING,
    SMS_UNCERTAIN,
    UNKNOWN_POSTING,
    UNRESOLVED,
    AuditReport,
    BillerOutboxRow,
    BillerTotals,
    Finding,
    JournalRow,
    ReversalRow,
    SmsRow,
)

# A payment's rules as the configuration states them now: the broken rule's
# name, or None (see :func:`billgw.gateway.rules.check_request`).
RuleCheck = Callable[[JournalRow], "str | None"]

# Payment states in which the gateway still owes the payment an outcome.
UNSETTLED_STATES = frozenset(state.value for state in UNSETTLED)
# Payment states after which the biller must hold no live posting.
UNDONE_STATES = frozenset({State.REVERSED.value, State.DECLINED.value})

# SMS rows that have gone, are going, or will go to the subscriber's phone.
_SMS_LIVE = frozenset({OutboxState.QUEUED.value, OutboxState.SENDING.value, OutboxState.SENT.value,
                       OutboxState.FAILED.value, OutboxState.UNCERTAIN.value,
                       OutboxState.DELIVERED.value, OutboxState.UNDELIVERABLE.value, OutboxState.EXPIRED.value})
# A receipt in these states may already be on the subscriber's phone
# (UNDELIVERABLE: some of its parts may be).
_SMS_MAYBE_DELIVERED = frozenset({OutboxState.SENT.value, OutboxState.SENDING.value,
                                  OutboxState.UNCERTAIN.value, OutboxState.DELIVERED.value,
                                  OutboxState.UNDELIVERABLE.value})

_REVERSAL_NOT_FOUND = "NOT_FOUND"
_REVERSAL_EXCEPTION = "EXCEPTION"
_OUTBOX_PENDING = "PENDING"
_OUTBOX_EXPIRED = "EXPIRED"
# Payment states in which the biller holds, or is being asked to hold, it.
_POSTED_OR_POSTING = frozenset({State.POSTING.value, State.IN_DOUBT.value, State.CONFIRMED.value,
                                State.ACCEPTED.value})


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
            "ledger_pending": posting.pending, "ledger_rejected": posting.rejected,
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
        # Booked postings: a row still in a biller's intake is not booked yet.
        live = [p.amount for p in ledgers[code] if p.held and not p.pending] if code in ledgers else None
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
