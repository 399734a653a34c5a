"""What the host's answer records mean, as pure functions: record in,
result (or the interface error it means for the money) out.

- an answer of the expected type for another payment id, or of another
  type, or one that cannot be decoded: ``BillerOutcomeUnknown``;
- ``REJT``: "refused, nothing recorded" -- a ``BillerDeclined`` with the
  reason of the host's error code (the code table), except codes the table
  maps to ``outcome_unknown`` (the host's own failures: it may have done
  part of the work);
- a status query is never declined (anything but ``STAA`` is asked again
  later), and a reversal is declined only for ``not_permitted`` (anything
  else is retried).
"""
from __future__ import annotations

import datetime as _dt
from decimal import Decimal
from typing import Mapping

from billgw.billing_adapters.interface import (
    Bill,
    BillerDeclined,
    BillerOutcomeUnknown,
    BillInquiryResult,
    BillQuery,
    BillStatus,
    BillAmount,
    DeclineReason,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    PaymentStatusKind,
    ReversalConfirmation,
)

from .records import MAX_BILLS, Record

OUTCOME_UNKNOWN = "outcome_unknown"

# The host's error codes (REJT.error_code) and what they mean; a biller's
# own codes are added or changed with the ``error_codes`` setting.
DEFAULT_ERROR_CODES: dict[str, str] = {
    "E101": DeclineReason.UNKNOWN_BILLING_NUMBER.value,
    "E102": DeclineReason.BILL_NOT_FOUND.value,
    "E103": DeclineReason.NO_BILL_DUE.value,
    "E104": DeclineReason.BILL_ALREADY_PAID.value,
    "E105": DeclineReason.INVALID_AMOUNT.value,
    "E106": DeclineReason.CUTOFF_PASSED.value,
    "E107": DeclineReason.NOT_PERMITTED.value,  # reversals not taken
    "E108": DeclineReason.OTHER.value,  # payment id reused with other data
    "E109": DeclineReason.OTHER.value,  # the record was malformed
    "S999": OUTCOME_UNKNOWN,  # the host failed while processing: it may hold the request
}


# --- amounts ---------------------------------------------------------------------

def to_host_amount(minor: int, exponent: int) -> Decimal:
    """Minor units of a currency with ``exponent`` decimals as the host's
    decimal amount (12500 fils -> Decimal('12.500'))."""
    return Decimal(minor).scaleb(-exponent)


def from_host_amount(amount, exponent: int) -> int:
    units = Decimal(amount).scaleb(exponent)
    if units != units.to_integral_value():
        raise BillerOutcomeUnknown(f"the host's amount {amount} is not a whole number of minor units")
    return int(units)


def host_timestamp(iso: str) -> int:
    """ISO 8601 UTC ('2026-12-02T08:00:00Z') as YYYYMMDDHHMMSS."""
    moment = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc)
    return int(moment.strftime("%Y%m%d%H%M%S"))


# --- requests ----------------------------------------------------------------------

ACCOUNT_LENGTH = 16  # the host's account fields are PIC X(16)


def check_account(billing_number: str) -> None:
    """A billing number the host's account field cannot hold is no account
    of the host's: declined before anything is sent."""
    if len(billing_number) > ACCOUNT_LENGTH:
        raise BillerDeclined(DeclineReason.UNKNOWN_BILLING_NUMBER,
                             f"{len(billing_number)} characters, the host's accounts have at most {ACCOUNT_LENGTH}")

def payment_values(order: PaymentOrder, service: str, exponent: int) -> dict:
    check_account(order.billing_number)
    bills = list(order.bills)
    if not bills and order.bill_number:
        bills = [BillAmount(order.bill_number, order.amount)]
    if len(bills) > MAX_BILLS:
        raise BillerDeclined(DeclineReason.OTHER, f"{len(bills)} bills in one payment, the host takes {MAX_BILLS}")
    return {
        "payment_id": order.payment_id, "service": service, "account": order.billing_number,
        "amount": to_host_amount(order.amount, exponent), "currency": int(order.currency),
        "paid_at": host_timestamp(order.paid_at), "channel": order.channel[:4],
        "bills": [{"bill_number": b.bill_number, "amount": to_host_amount(b.amount, exponent)} for b in bills],
    }


# --- answers -----------------------------------------------------------------------

def rejection(record: Record, codes: Mapping[str, str]) -> BillerDeclined | BillerOutcomeUnknown:
    code = record["error_code"]
    meaning = codes.get(code, DeclineReason.OTHER.value)
    detail = f"host {code}: {record['message']}"
    if meaning == OUTCOME_UNKNOWN:
        return BillerOutcomeUnknown(detail)
    return BillerDeclined(DeclineReason(meaning), detail)


def _expect(record: Record, kind: str) -> None:
    if record.kind != kind:
        raise BillerOutcomeUnknown(f"answered {record.kind} where {kind} was expected")


def inquiry_result(record: Record, query: BillQuery, exponent: int, codes: Mapping[str, str]) -> BillInquiryResult:
    if record.kind == "REJT":
        raise rejection(record, codes)
    _expect(record, "INQA")
    if record["account"] != query.billing_number:
        raise BillerOutcomeUnknown(f"answer for account {record['account']!r}, not {query.billing_number!r}")
    currency = f"{record['currency']:03d}"
    bills = []
    for entry in record["bills"]:
        due = from_host_amount(entry["amount_due"], exponent)
        if due <= 0:
            continue  # paid, or a credit: nothing to offer
        partial = entry["partial"] == "Y"
        bills.append(Bill(
            bill_number=entry["bill_number"], amount_due=due, due_date=f"{entry['due_date']:08d}",
            currency=currency, status=BillStatus.NEW,
            issue_date=f"{entry['issue_date']:08d}" if entry["issue_date"] else None,
            allow_partial=partial,
            min_amount=from_host_amount(entry["min_amount"], exponent) if partial and entry["min_amount"] else None))
    bills.sort(key=lambda b: b.due_date)
    return BillInquiryResult(billing_number=record["account"], customer_name=record["customer"], bills=tuple(bills))


def payment_confirmation(record: Record, order: PaymentOrder, exponent: int,
                         codes: Mapping[str, str]) -> PaymentConfirmation:
    if record.kind == "REJT":
        raise rejection(record, codes)
    _expect(record, "PAYA")
    if record["payment_id"] != order.payment_id:
        raise BillerOutcomeUnknown(f"answer for payment {record['payment_id']!r}, not {order.payment_id!r}")
    if not record["receipt"]:
        raise BillerOutcomeUnknown("a payment answer without a receipt number")
    settled = tuple(BillAmount(e["bill_number"], from_host_amount(e["amount"], exponent)) for e in record["bills"])
    return PaymentConfirmation(
        payment_id=order.payment_id, receipt_number=record["receipt"],
        amount=from_host_amount(record["amount"], exponent),
        bill_number=settled[0].bill_number if len(settled) == 1 else order.bill_number, settled=settled)


_STATES = {"P": PaymentStatusKind.POSTED, "N": PaymentStatusKind.NOT_FOUND, "R": PaymentStatusKind.REVERSED}


def payment_status(record: Record, payment_id: str, exponent: int) -> PaymentStatus:
    if record.kind == "REJT":
        raise BillerOutcomeUnknown(f"status query refused: host {record['error_code']}: {record['message']}")
    _expect(record, "STAA")
    if record["payment_id"] != payment_id:
        raise BillerOutcomeUnknown(f"status of payment {record['payment_id']!r}, not {payment_id!r}")
    state = _STATES.get(record["state"])
    if state is None:
        raise BillerOutcomeUnknown(f"unknown payment state {record['state']!r}")
    found = state is not PaymentStatusKind.NOT_FOUND
    return PaymentStatus(payment_id, state, receipt_number=record["receipt"] or None,
                         amount=from_host_amount(record["amount"], exponent) if found else None)


def reversal_confirmation(record: Record, payment_id: str, codes: Mapping[str, str]) -> ReversalConfirmation:
    if record.kind == "REJT":
        refusal = rejection(record, codes)
        if isinstance(refusal, BillerDeclined) and refusal.reason is DeclineReason.NOT_PERMITTED:
            raise refusal
        raise BillerOutcomeUnknown(f"reversal not done ({refusal}): retried")
    _expect(record, "REVA")
    if record["payment_id"] != payment_id:
        raise BillerOutcomeUnknown(f"reversal of payment {record['payment_id']!r}, not {payment_id!r}")
    if record["result"] not in ("R", "N"):
        raise BillerOutcomeUnknown(f"unknown reversal result {record['result']!r}")
    reversed_ = record["result"] == "R"
    return ReversalConfirmation(payment_id, reversed_,
                                detail=f"receipt {record['receipt']}" if reversed_ else "the host never had it")
