"""The electricity host's records: its copybook, as data, and the codec.

Every record starts with the same header -- a 4-character record type and
a 6-digit sequence number -- so an answer is matched to its request by the
sequence number alone, whatever the body holds (several requests are in
flight on the one link).  The host answers a request with the answer record
of the same sequence number, or with a ``REJT`` (reject) record of that
number: "refused, nothing recorded", with the host's error code.

The layouts below are the whole of the wire format; docs/billers.md prints
them as tables from the same data (:func:`layout_tables`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import fields
from .copybook import Layout, N, Occurs, P, RecordError, X, describe

MAX_SEQUENCE = 999_999  # PIC 9(6)
MAX_BILLS = 6  # OCCURS 6 TIMES: bills per inquiry answer or payment
AMOUNT_DIGITS, AMOUNT_SCALE = 13, 3  # PIC S9(10)V999: amounts in thousandths

_HEADER = (
    X("record_type", 4, "the record type, e.g. PAYR"),
    N("sequence", 6, doc="request number, 1-999999, echoed in the answer"),
)


def _layout(code: str, doc: str, *items) -> Layout:
    return Layout(code, _HEADER + tuple(items), doc)


def _amount(name: str, doc: str = "", *, packed: bool = True, signed: bool = True):
    make = P if packed else N
    return make(name, AMOUNT_DIGITS, AMOUNT_SCALE, signed=signed, doc=doc)


SIGN_ON = _layout("SGON", "sign-on, the first record on a new link",
                  X("user", 8, "our user id at the host"),
                  X("password", 8, "its password"),
                  X("terminal", 8, "our terminal id"))
SIGN_ON_ANSWER = _layout("SGOA", "sign-on answer",
                         X("result", 2, "00 accepted; anything else refused"),
                         X("message", 40, "the host's words"))
HEARTBEAT = _layout("HBRQ", "heartbeat, on an interval",
                    N("sent_at", 14, doc="YYYYMMDDHHMMSS (UTC)"))
HEARTBEAT_ANSWER = _layout("HBRA", "heartbeat answer",
                           N("sent_at", 14, doc="echoed"))
INQUIRY = _layout("INQR", "bill inquiry",
                  X("service", 8, "the host's service code"),
                  X("account", 16, "the billing number"),
                  X("bill_number", 16, "one bill only, or spaces for all open bills"))
INQUIRY_ANSWER = _layout(
    "INQA", "the open bills of an account",
    X("account", 16, "the billing number"),
    X("customer", 30, "the account holder's name"),
    N("currency", 3, doc="ISO 4217 numeric"),
    N("bill_count", 2, doc="entries used in bills"),
    Occurs("bills", MAX_BILLS, (
        X("bill_number", 16),
        _amount("amount_due", "still due; zoned, negative for a credit", packed=False),
        N("issue_date", 8, doc="YYYYMMDD"),
        N("due_date", 8, doc="YYYYMMDD"),
        X("partial", 1, "Y: part payments accepted"),
        _amount("min_amount", "smallest part payment", signed=False),
    ), "bill_count", "oldest first"),
)
PAYMENT = _layout(
    "PAYR", "payment, idempotent on payment_id",
    X("payment_id", 32, "the gateway's unique id"),
    X("service", 8),
    X("account", 16),
    _amount("amount", "the whole payment", signed=False),
    N("currency", 3),
    N("paid_at", 14, doc="YYYYMMDDHHMMSS (UTC)"),
    X("channel", 4, "ATM"),
    N("bill_count", 2),
    Occurs("bills", MAX_BILLS, (
        X("bill_number", 16),
        _amount("amount", "on this bill", signed=False),
    ), "bill_count", "what the payment settles; none: the host allocates, oldest first"),
)
PAYMENT_ANSWER = _layout(
    "PAYA", "payment recorded (also the answer to a repeat)",
    X("payment_id", 32),
    X("receipt", 16, "the host's receipt number"),
    _amount("amount", "what the host recorded", signed=False),
    N("bill_count", 2),
    Occurs("bills", MAX_BILLS, (
        X("bill_number", 16),
        _amount("amount", signed=False),
    ), "bill_count", "the bills the host settled"),
)
STATUS = _layout("STAR", "status of a payment",
                 X("payment_id", 32))
STATUS_ANSWER = _layout("STAA", "status answer",
                        X("payment_id", 32),
                        X("state", 1, "P posted, R reversed, N never recorded"),
                        X("receipt", 16, "spaces when N"),
                        _amount("amount", "recorded amount, 0 when N", signed=False))
REVERSAL = _layout("REVR", "reversal of a payment, idempotent",
                   X("payment_id", 32),
                   X("reason", 2, "our reason code"))
REVERSAL_ANSWER = _layout("REVA", "reversal answer",
                          X("payment_id", 32),
                          X("result", 1, "R reversed (now or before), N the host never had it"),
                          X("receipt", 16, "the reversed payment's receipt, or spaces"))
REJECT = _layout("REJT", "refused, nothing recorded: the answer to any request",
                 X("refused", 4, "the record type refused"),
                 X("error_code", 4, "the host's error code (the adapter's code table)"),
                 X("message", 40))

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    SIGN_ON, SIGN_ON_ANSWER, HEARTBEAT, HEARTBEAT_ANSWER, INQUIRY, INQUIRY_ANSWER, PAYMENT, PAYMENT_ANSWER,
    STATUS, STATUS_ANSWER, REVERSAL, REVERSAL_ANSWER, REJECT)}
HEADER_SIZE = sum(item.size for item in _HEADER)
LONGEST = max(layout.size for layout in LAYOUTS.values())

# Which answer a request expects (REJT answers any of them).
ANSWER_TO = {"SGON": "SGOA", "HBRQ": "HBRA", "INQR": "INQA", "PAYR": "PAYA", "STAR": "STAA", "REVR": "REVA"}


@dataclass(frozen=True)
class Record:
    kind: str  # the record type, e.g. "PAYA"
    sequence: int
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class RecordCodec:
    """Records to bytes and back in one code page; with ``fixed_length``,
    every record is padded with spaces to that length (fixed-length
    framing) and the padding is checked on the way in."""

    def __init__(self, code_page: str = fields.DEFAULT_CODE_PAGE, fixed_length: int | None = None):
        self.code_page = fields.check_code_page(code_page)
        if fixed_length is not None and fixed_length < LONGEST:
            raise ValueError(f"fixed record length {fixed_length} is shorter than the longest record ({LONGEST})")
        self.fixed_length = fixed_length
        self._space = fields.space(self.code_page)
        self._header = Layout("header", _HEADER)

    def encode(self, kind: str, sequence: int, **values: Any) -> bytes:
        layout = LAYOUTS.get(kind)
        if layout is None:
            raise RecordError(kind, "no such record type")
        data = layout.encode({"record_type": kind, "sequence": sequence, **values}, self.code_page)
        if self.fixed_length is not None:
            data += self._space * (self.fixed_length - len(data))
        return data

    def header(self, payload: bytes) -> tuple[str, int]:
        """(record type, sequence) of a record whose body may be garbage."""
        if len(payload) < HEADER_SIZE:
            raise RecordError("header", f"record of {len(payload)} bytes, shorter than its header")
        head = self._header.decode(payload[:HEADER_SIZE], self.code_page)
        return head["record_type"], head["sequence"]

    def decode(self, payload: bytes) -> Record:
        kind, sequence = self.header(payload)
        layout = LAYOUTS.get(kind)
        if layout is None:
            raise RecordError("record_type", f"unknown record type {kind!r}")
        body, padding = payload[:layout.size], payload[layout.size:]
        if self.fixed_length is not None and len(payload) != self.fixed_length:
            raise RecordError(kind, f"record of {len(payload)} bytes, fixed length is {self.fixed_length}")
        if padding.strip(self._space):
            raise RecordError(kind, f"{len(padding)} bytes after the record that are not spaces")
        if len(body) != layout.size:
            raise RecordError(kind, f"record of {len(body)} bytes, the layout has {layout.size}")
        values = layout.decode(body, self.code_page)
        del values["record_type"], values["sequence"]
        return Record(kind, sequence, values)


def layout_tables() -> str:
    """The copybook as Markdown tables (docs/billers.md is made from this)."""
    out = []
    for layout in LAYOUTS.values():
        out.append(f"**{layout.name}** -- {layout.doc} ({layout.size} bytes)\n")
        out.append("| Field | Offset | Length | PIC | Meaning |\n|---|---|---|---|---|")
        out += [f"| `{name.strip()}`{' (each)' if name.startswith('  ') else ''} | {at} | {size} | {pic} | {doc} |"
                for name, at, size, pic, doc in describe(layout)]
        out.append("")
    return "\n".join(out)
