"""How a finding shows a payment and what another system wrote about it.

Shared by the audit's rule modules: a finding's details (the payment's
kind, state, amount, masked PAN, ...; a ledger posting's fields) and the
masking of free text from billers, which may run a PAN into other digits.
"""
from __future__ import annotations

import re
from typing import Any

from billgw.billing_adapters.interface import LedgerEntry as Posting  # any adapter's ledger entry
from billgw.iso8583.masking import mask_pan, mask_text

from .rows import Finding, JournalRow


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
