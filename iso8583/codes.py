"""Outcomes of a request and the ISO 8583 response codes (F39) they map to.

The gateway decides an :class:`Outcome`; which two characters go into F39 for
it is a property of the network, so the table lives in ``conf/`` and
:data:`DEFAULT_CODES` is only its default.  :class:`ResponseCodes` is the
loaded table, used both ways: outcome -> code when answering, code -> text
when a person reads an answer (atm-sim, logs).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping


class Outcome(enum.Enum):
    APPROVED = "approved"
    NOT_SIGNED_ON = "not_signed_on"
    INVALID_TRANSACTION = "invalid_transaction"
    # A 0200 whose keys the switch has reversed: the original arriving after
    # its reversal, or a repeat of a reversed payment (never its old 00).
    TRANSACTION_REVERSED = "transaction_reversed"
    INVALID_AMOUNT = "invalid_amount"
    # The service's bill rules (gateway/bill_rules.py, docs/bill-rules.md):
    # less than due where partial payment is not allowed or below its lower
    # bound; more than due beyond what the service allows; a top-up amount
    # the biller does not offer.
    AMOUNT_BELOW_DUE = "amount_below_due"
    AMOUNT_ABOVE_DUE = "amount_above_due"
    AMOUNT_NOT_OFFERED = "amount_not_offered"
    # A payment's inquiry reference (IR) where the service checks it: not an
    # answered inquiry of this account, or older than the service allows.
    INQUIRY_REFERENCE_UNKNOWN = "inquiry_reference_unknown"
    INQUIRY_REFERENCE_EXPIRED = "inquiry_reference_expired"
    INVALID_BILLING_NUMBER = "invalid_billing_number"
    RECORD_NOT_FOUND = "record_not_found"
    FORMAT_ERROR = "format_error"
    BILL_ALREADY_PAID = "bill_already_paid"
    LATE_RESPONSE = "late_response"
    NO_BILL_DUE = "no_bill_due"
    CUTOFF_PASSED = "cutoff_passed"
    BILLER_UNAVAILABLE = "biller_unavailable"
    DUPLICATE_TRANSMISSION = "duplicate_transmission"
    SYSTEM_MALFUNCTION = "system_malfunction"
    # Past the gateway's cap of requests in flight: refused at once, nothing
    # journaled; the switch may send it again (same keys) a little later.
    GATEWAY_BUSY = "gateway_busy"
    # The connection's peer may not speak for this acquirer (F32, or the
    # original's in F90) or terminal (F41): refused before anything is
    # journaled or sent to a biller (gateway/peers.py, docs/security.md).
    NOT_PERMITTED = "not_permitted"
    # The MSISDN for the receipt (F48 tag MS) is not a valid number of the
    # configured country, and [sms] invalid_msisdn = "decline": refused
    # before anything is posted (gateway/msisdn_policy.py).
    INVALID_MSISDN = "invalid_msisdn"
    # The peer MACs its messages (ISO 9797-1 algorithm 3 in F64/F128) and
    # this one's MAC is missing, misplaced or wrong: refused before anything
    # is journaled or sent to a biller (iso8583/mac.py, docs/security.md).
    SECURITY_VIOLATION = "security_violation"
    # The terminal sent 0200s faster than its peer's rate limit allows
    # (a token bucket per terminal): refused at once, nothing journaled.
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class CodeEntry:
    code: str
    text: str


DEFAULT_CODES: Mapping[Outcome, CodeEntry] = {
    Outcome.APPROVED: CodeEntry("00", "Approved"),
    Outcome.NOT_SIGNED_ON: CodeEntry("05", "Do not honour: peer not signed on"),
    Outcome.INVALID_TRANSACTION: CodeEntry("12", "Invalid transaction"),
    Outcome.TRANSACTION_REVERSED: CodeEntry("12", "Invalid transaction: reversed by the acquirer"),
    Outcome.INVALID_AMOUNT: CodeEntry("13", "Invalid amount"),
    Outcome.AMOUNT_BELOW_DUE: CodeEntry("13", "Invalid amount: less than the service allows for the bills due"),
    Outcome.AMOUNT_ABOVE_DUE: CodeEntry("13", "Invalid amount: more than the service allows for the bills due"),
    Outcome.AMOUNT_NOT_OFFERED: CodeEntry("13", "Invalid amount: not a top-up amount the biller offers"),
    Outcome.INQUIRY_REFERENCE_UNKNOWN: CodeEntry("76", "Inquiry reference unknown or of another account"),
    Outcome.INQUIRY_REFERENCE_EXPIRED: CodeEntry("77", "Inquiry reference expired: inquire again"),
    Outcome.INVALID_BILLING_NUMBER: CodeEntry("14", "Invalid billing number"),
    Outcome.RECORD_NOT_FOUND: CodeEntry("25", "Record not found"),
    Outcome.FORMAT_ERROR: CodeEntry("30", "Format error"),
    Outcome.BILL_ALREADY_PAID: CodeEntry("54", "Bill already paid"),
    Outcome.LATE_RESPONSE: CodeEntry("68", "Response received too late"),
    Outcome.NO_BILL_DUE: CodeEntry("88", "No bill due"),
    Outcome.CUTOFF_PASSED: CodeEntry("90", "Cut-off in progress"),
    Outcome.BILLER_UNAVAILABLE: CodeEntry("91", "Biller unavailable"),
    Outcome.DUPLICATE_TRANSMISSION: CodeEntry("94", "Duplicate transmission"),
    Outcome.SYSTEM_MALFUNCTION: CodeEntry("96", "System malfunction"),
    Outcome.GATEWAY_BUSY: CodeEntry("91", "Gateway busy: send again later"),
    Outcome.NOT_PERMITTED: CodeEntry("58", "Transaction not permitted: acquirer or terminal not allowed for this peer"),
    Outcome.INVALID_MSISDN: CodeEntry("30", "Format error: the mobile number for the SMS receipt is invalid"),
    Outcome.SECURITY_VIOLATION: CodeEntry("63", "Security violation: MAC missing or wrong"),
    Outcome.RATE_LIMITED: CodeEntry("65", "Exceeds frequency limit: terminal sending too fast"),
}


class ResponseCodes:
    """A network's response-code table, checked for completeness on load."""

    def __init__(self, entries: Mapping[Outcome, CodeEntry] = DEFAULT_CODES):
        missing = [o.value for o in Outcome if o not in entries]
        if missing:
            raise ValueError(f"response code table lacks outcome(s): {', '.join(missing)}")
        for outcome, entry in entries.items():
            if len(entry.code) != 2 or not entry.code.isalnum():
                raise ValueError(f"response code for {outcome.value} must be 2 alphanumerics, not {entry.code!r}")
        self._entries = dict(entries)
        self._by_code: dict[str, CodeEntry] = {}
        for entry in entries.values():
            self._by_code.setdefault(entry.code, entry)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Mapping[str, str]]) -> "ResponseCodes":
        """Build from ``{outcome_name: {"code": "00", "text": "..."}}`` (conf/),
        over the defaults; raises ValueError naming an unknown outcome."""
        entries = dict(DEFAULT_CODES)
        names = {o.value: o for o in Outcome}
        for name, spec in table.items():
            if name not in names:
                raise ValueError(f"unknown outcome {name!r}")
            unknown = set(spec) - {"code", "text"}
            if unknown:
                raise ValueError(f"{name}: unknown key {sorted(unknown)[0]!r}")
            base = entries[names[name]]
            entries[names[name]] = CodeEntry(str(spec.get("code", base.code)), str(spec.get("text", base.text)))
        return cls(entries)

    def code(self, outcome: Outcome) -> str:
        return self._entries[outcome].code

    def text(self, code: str) -> str:
        entry = self._by_code.get(code)
        return entry.text if entry else "Unknown response code"

    def items(self):
        return self._entries.items()
