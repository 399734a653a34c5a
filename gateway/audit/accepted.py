"""The audit's rules for contract v2: payments a biller records later.

An ACCEPTED payment was approved (the switch debited the customer) and sits
in its biller's intake waiting for the biller's batch; the gateway owes the
subscriber a receipt once the batch books it.  What can go wrong, and what
the audit names (pure: rows in, findings out, like :mod:`.rules`):

- the biller's ledger holds nothing live for an ACCEPTED payment (no intake
  row, or a rejected or withdrawn one): approved, and nobody has the money
  -- ``accepted_missing_at_biller``;
- a payment ACCEPTED for longer than the configured limit: the biller's
  batch is not running or skips it -- ``accepted_too_long``;
- a CONFIRMED payment still pending in the biller's intake: the receipt said
  "paid" before the biller booked it -- ``confirmed_not_booked``;
- an ACCEPTED payment the batch already booked is only noted
  (``accepted_booked``): the gateway's next poll confirms it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from billgw.billing_adapters.interface import LedgerEntry

from ..states import State
from .rows import (
    ACCEPTED_BOOKED,
    ACCEPTED_MISSING_AT_BILLER,
    ACCEPTED_TOO_LONG,
    CONFIRMED_NOT_BOOKED,
    Finding,
    JournalRow,
)


def _finding(category: str, row: JournalRow, message: str, **extra) -> Finding:
    details = {"kind": row.kind, "state": row.state, "amount": row.amount, "currency": row.currency,
               "rrn": row.rrn, "terminal_id": row.terminal_id, **extra}
    return Finding(category, row.id, message, row.biller_code, details)


def findings(journal: Mapping[str, JournalRow], ledgers: Mapping[str, Sequence[LedgerEntry]], *,
             now: float | None, limit: float | None) -> list[Finding]:
    own: dict[tuple[str, str], list[LedgerEntry]] = {}
    for biller, entries in ledgers.items():
        for entry in entries:
            own.setdefault((biller, entry.payment_id), []).append(entry)
    out: list[Finding] = []
    for row in journal.values():
        if row.kind != "payment" or row.state not in (State.ACCEPTED.value, State.CONFIRMED.value):
            continue
        accepted = row.state == State.ACCEPTED.value
        if accepted and now is not None and limit is not None and row.updated_at is not None \
                and now - row.updated_at > limit:
            hours = (now - row.updated_at) / 3600
            out.append(_finding(
                ACCEPTED_TOO_LONG, row,
                f"Payment {row.id} has been ACCEPTED for {hours:.1f} h (limit {limit / 3600:.1f} h): "
                f"{row.biller_code}'s batch has not booked it, and the subscriber has no receipt.",
                accepted_hours=round(hours, 1)))
        if row.biller_code not in ledgers:
            continue
        held = [e for e in own.get((row.biller_code, row.id), ()) if e.held]
        if accepted and not held:
            out.append(_finding(
                ACCEPTED_MISSING_AT_BILLER, row,
                f"Payment {row.id} is ACCEPTED (the switch was approved), but {row.biller_code} holds "
                "nothing live for it: no intake row, or one rejected or withdrawn.",
                ledger=row.biller_code))
        elif accepted and all(not e.pending for e in held):
            out.append(_finding(
                ACCEPTED_BOOKED, row,
                f"Payment {row.id} is ACCEPTED and {row.biller_code}'s batch has booked it: the "
                "gateway's next status poll confirms it and sends the receipt.",
                ledger=row.biller_code))
        elif not accepted and held and all(e.pending for e in held):
            out.append(_finding(
                CONFIRMED_NOT_BOOKED, row,
                f"Payment {row.id} is CONFIRMED, but {row.biller_code} still holds it unbooked in its "
                "intake: the subscriber was told \"paid\" before the biller recorded it.",
                ledger=row.biller_code))
    return out
