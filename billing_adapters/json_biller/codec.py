"""The JSON biller interface's messages: pure encode/decode, no I/O.

Both sides use it -- the adapter and the simulator -- so they agree on the
wire, and each function is testable on bytes.  Every decoder checks what it
relies on (types, the echoed payment id, non-negative amounts) and raises
:class:`JsonDecodeError` for anything else: an answer that is half
understood is never used to confirm a payment.

Wire conventions (docs/billers.md): UTF-8 JSON objects; amounts are
integers in minor units; currencies ISO 4217 numeric strings; dates
``YYYY-MM-DD`` (the interface's ``YYYYMMDD`` inside the gateway); times ISO
8601 UTC.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from billgw.billing_adapters.interface import (
    Bill,
    BillerDeclined,
    BillInquiryResult,
    BillQuery,
    BillStatus,
    DeclineReason,
    LedgerEntry,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    PaymentStatusKind,
    ReversalConfirmation,
)

CONTENT_TYPE = b"application/json; charset=utf-8"
MAX_MESSAGE_BYTES = 256 * 1024
INTERFACE_VERSION = "1"

# Paths below the biller's base URL.
INQUIRY_PATH = "/bills/inquiry"
PAYMENTS_PATH = "/payments"


def payment_path(payment_id: str) -> str:
    return f"{PAYMENTS_PATH}/{payment_id}"


def reversal_path(payment_id: str) -> str:
    return f"{PAYMENTS_PATH}/{payment_id}/reversal"


# Payment ids travel in a URL path: the gateway's are hex; allow what a
# scheme's ids look like, nothing that needs escaping.
PAYMENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The error codes of the interface, and what each means to the gateway.
# All of them say "refused, nothing recorded"; they are believed only on a
# refusal status (400, 404, 422...), never on a 5xx.
ERROR_REASONS: dict[str, DeclineReason] = {
    "BILLING_NUMBER_NOT_FOUND": DeclineReason.UNKNOWN_BILLING_NUMBER,
    "BILL_NOT_FOUND": DeclineReason.BILL_NOT_FOUND,
    "NO_BILL_DUE": DeclineReason.NO_BILL_DUE,
    "BILL_ALREADY_PAID": DeclineReason.BILL_ALREADY_PAID,
    "BILL_EXPIRED": DeclineReason.NO_BILL_DUE,
    "INVALID_AMOUNT": DeclineReason.INVALID_AMOUNT,
    "PARTIAL_NOT_ALLOWED": DeclineReason.INVALID_AMOUNT,
    "CURRENCY_MISMATCH": DeclineReason.INVALID_AMOUNT,
    "CUTOFF_PASSED": DeclineReason.CUTOFF_PASSED,
    "REVERSAL_NOT_PERMITTED": DeclineReason.NOT_PERMITTED,
    "DUPLICATE_MISMATCH": DeclineReason.OTHER,
    "PAYMENT_ID_REVERSED": DeclineReason.OTHER,
    "UNKNOWN_SERVICE": DeclineReason.OTHER,
    "INVALID_REQUEST": DeclineReason.OTHER,
}

DECLINE_REASONS = {reason.value: reason for reason in DeclineReason}


class JsonDecodeError(ValueError):
    """The bytes are not a usable message of the interface."""


# --- generic -------------------------------------------------------------------

def dumps(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def loads(data: bytes) -> dict[str, Any]:
    """A JSON object from ``data``; JsonDecodeError for anything else."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise JsonDecodeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JsonDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise JsonDecodeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _field(message: Mapping[str, Any], name: str, kind: type | tuple, *, required: bool = True):
    value = message.get(name)
    if value is None:
        if required:
            raise JsonDecodeError(f"missing field {name}")
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise JsonDecodeError(f"field {name} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    if not isinstance(value, kind):
        raise JsonDecodeError(f"field {name} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def _amount(message, name: str, *, required: bool = True) -> int | None:
    value = _field(message, name, int, required=required)
    if value is not None and value < 0:
        raise JsonDecodeError(f"field {name} is negative")
    return value


def _text(message, name: str, *, required: bool = True) -> str | None:
    value = _field(message, name, str, required=required)
    if required and value == "":
        raise JsonDecodeError(f"field {name} is empty")
    return value


_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def wire_date(yyyymmdd: str | None) -> str | None:
    """``20261231`` -> ``2026-12-31``."""
    if yyyymmdd is None:
        return None
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}"


def _date(message, name: str, *, required: bool = True) -> str | None:
    """A wire date as the interface's YYYYMMDD."""
    value = _text(message, name, required=required)
    if value is None:
        return None
    match = _DATE.fullmatch(value)
    if match is None:
        raise JsonDecodeError(f"field {name} is not a date YYYY-MM-DD: {value!r}")
    return "".join(match.groups())


def _check_payment_id(message, payment_id: str) -> None:
    # An answer about another payment must never confirm this one.
    answered = _text(message, "paymentId")
    if answered != payment_id:
        raise JsonDecodeError(f"answer names paymentId {answered!r}, asked {payment_id!r}")


# --- errors ----------------------------------------------------------------------

def error_body(code: str, message: str = "") -> bytes:
    return dumps({"error": {"code": code, "message": message}})


def decode_error(data: bytes) -> tuple[str, str] | None:
    """(code, message) of an error body, or None when the body is not one."""
    try:
        message = loads(data)
    except JsonDecodeError:
        return None
    error = message.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("code"), str) or not error["code"]:
        return None
    text = error.get("message")
    return error["code"], text if isinstance(text, str) else ""


def decline_for(code: str, message: str, extra: Mapping[str, DeclineReason] | None = None) -> BillerDeclined:
    """The decline an error code means (``extra``: the biller's own codes,
    from configuration; an unknown code on a refusal is OTHER)."""
    reason = (extra or {}).get(code) or ERROR_REASONS.get(code) or DeclineReason.OTHER
    return BillerDeclined(reason, f"{code}: {message}" if message else code)


# --- inquiry -----------------------------------------------------------------------

def encode_inquiry(query: BillQuery, service: str) -> bytes:
    message = {"service": service, "billingNumber": query.billing_number}
    if query.bill_number:
        message["billNumber"] = query.bill_number
    return dumps(message)


_BILL_STATUSES = {status.value: status for status in BillStatus}
OPEN_STATUSES = (BillStatus.NEW, BillStatus.PARTIALLY_PAID)


def decode_bill(item: Any) -> Bill:
    if not isinstance(item, dict):
        raise JsonDecodeError("a bill is not an object")
    status_text = _text(item, "status")
    status = _BILL_STATUSES.get(status_text)
    if status is None:
        raise JsonDecodeError(f"unknown bill status {status_text!r}")
    allow_partial = _field(item, "allowPartial", bool, required=False)
    return Bill(
        bill_number=_text(item, "billNumber"),
        amount_due=_amount(item, "dueAmount"),
        due_date=_date(item, "dueDate"),
        currency=_text(item, "currency"),
        status=status,
        issue_date=_date(item, "issueDate", required=False),
        expiry_date=_date(item, "expiryDate", required=False),
        allow_partial=allow_partial,
        min_amount=_amount(item, "minAmount", required=False),
        max_amount=_amount(item, "maxAmount", required=False),
    )


def decode_inquiry(data: bytes, query: BillQuery) -> BillInquiryResult:
    """The open bills of the answer (NEW or PARTIALLY_PAID with something
    due), oldest due date first; paid and expired bills are not payable."""
    message = loads(data)
    bills = message.get("bills")
    if not isinstance(bills, list):
        raise JsonDecodeError("missing field bills")
    decoded = [decode_bill(item) for item in bills]
    number = _text(message, "billingNumber")
    if number != query.billing_number:
        raise JsonDecodeError(f"answer names billingNumber {number!r}, asked {query.billing_number!r}")
    open_bills = sorted((b for b in decoded if b.status in OPEN_STATUSES and b.amount_due > 0),
                        key=lambda b: (b.due_date, b.bill_number))
    return BillInquiryResult(billing_number=number, customer_name=_text(message, "customerName"),
                             bills=tuple(open_bills))


def encode_bill(bill: Bill) -> dict[str, Any]:
    out = {"billNumber": bill.bill_number, "status": bill.status.value, "dueAmount": bill.amount_due,
           "currency": bill.currency, "dueDate": wire_date(bill.due_date)}
    for key, value in (("issueDate", wire_date(bill.issue_date)), ("expiryDate", wire_date(bill.expiry_date)),
                       ("allowPartial", bill.allow_partial), ("minAmount", bill.min_amount),
                       ("maxAmount", bill.max_amount)):
        if value is not None:
            out[key] = value
    return out


# --- payment notification ---------------------------------------------------------

def encode_payment(order: PaymentOrder, service: str) -> bytes:
    message = {"paymentId": order.payment_id, "service": service, "billingNumber": order.billing_number,
               "amount": order.amount, "currency": order.currency, "paidAt": order.paid_at,
               "channel": order.channel}
    if order.bill_number:
        message["billNumber"] = order.bill_number
    return dumps(message)


def decode_payment(data: bytes, payment_id: str) -> PaymentConfirmation:
    message = loads(data)
    _check_payment_id(message, payment_id)
    status = _text(message, "status")
    if status != "RECORDED":
        raise JsonDecodeError(f"payment answer with status {status!r}, not RECORDED")
    return PaymentConfirmation(payment_id=payment_id, receipt_number=_text(message, "receiptNumber"),
                               amount=_amount(message, "amount"),
                               bill_number=_text(message, "billNumber", required=False) or None)


# --- status and reversal ------------------------------------------------------------

_PAYMENT_STATUSES = {"RECORDED": PaymentStatusKind.POSTED, "REVERSED": PaymentStatusKind.REVERSED,
                     "NOT_FOUND": PaymentStatusKind.NOT_FOUND}


def decode_status(data: bytes, payment_id: str) -> PaymentStatus:
    message = loads(data)
    _check_payment_id(message, payment_id)
    text = _text(message, "status")
    kind = _PAYMENT_STATUSES.get(text)
    if kind is None:
        raise JsonDecodeError(f"unknown payment status {text!r}")
    if kind is PaymentStatusKind.NOT_FOUND:
        return PaymentStatus(payment_id, kind)
    return PaymentStatus(payment_id, kind, receipt_number=_text(message, "receiptNumber"),
                         amount=_amount(message, "amount"))


def encode_reversal(payment_id: str, reason: str = "acquirer reversal") -> bytes:
    return dumps({"paymentId": payment_id, "reason": reason})


def decode_reversal(data: bytes, payment_id: str) -> ReversalConfirmation:
    message = loads(data)
    _check_payment_id(message, payment_id)
    text = _text(message, "status")
    if text == "REVERSED":
        return ReversalConfirmation(payment_id, True)
    if text == "NOT_FOUND":
        return ReversalConfirmation(payment_id, False, "biller has no such payment")
    raise JsonDecodeError(f"unknown reversal status {text!r}")


# --- reconciliation (the ledger) -------------------------------------------------------

def decode_ledger_page(data: bytes) -> tuple[list[LedgerEntry], str | None]:
    """One page of ``GET /payments``: the entries and the cursor of the next
    page (None on the last)."""
    message = loads(data)
    items = message.get("payments")
    if not isinstance(items, list):
        raise JsonDecodeError("missing field payments")
    entries = []
    for item in items:
        if not isinstance(item, dict):
            raise JsonDecodeError("a payment is not an object")
        status = _text(item, "status")
        if status not in ("RECORDED", "REVERSED"):
            raise JsonDecodeError(f"ledger payment with status {status!r}")
        entries.append(LedgerEntry(
            payment_id=_text(item, "paymentId"), subscriber=_text(item, "billingNumber"),
            bill_number=_text(item, "billNumber"), amount=_amount(item, "amount"),
            receipt_number=_text(item, "receiptNumber"), reversed=status == "REVERSED",
            posted_at=_text(item, "recordedAt")))
    cursor = _text(message, "next", required=False)
    return entries, cursor or None
