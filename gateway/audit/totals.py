"""The audit report's figures: rows counted by state, and per biller the
journal's confirmed payments beside the ledger's booked postings.

Not invariants (those are :mod:`.rules`): what the operator reads to see
the size of the day, and which billers' payments were not compared with a
ledger at all (noted, not broken).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Mapping, Sequence

from billgw.billing_adapters.interface import LedgerEntry as Posting  # any adapter's ledger entry

from ..states import State
from .rows import NOT_AUDITED, BillerTotals, Finding, JournalRow


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
