"""The billgw ISO 8583:1987 dialect, as a pyiso8583 spec plus field usage.

ASCII MTI, the primary and secondary bitmaps as 16 hexadecimal characters
each, ASCII fields in their ISO 8583:1987 formats (pyiso8583's
``default_ascii``), except F48 whose TLV values are UTF-8 and whose LLL
length counts bytes.  Every field of the standard decodes, so a switch that
sends fields we do not use (F22, F25, ...) is still understood.

:data:`FIELD_USAGE` says which fields each message carries; the interface
document and the validation in :mod:`billgw.iso8583.messages` both read it.
"""
from __future__ import annotations

import copy

import iso8583.specs  # pyiso8583, not this package (see setup.py)

SPEC = copy.deepcopy(iso8583.specs.default_ascii)
SPEC["48"] = {
    "data_enc": "utf-8",
    "len_enc": "ascii",
    "len_type": 3,
    "max_len": 999,
    "desc": "Additional Data - Private (bill data TLV)",
}
SPEC["52"]["desc"] = "PIN Data (accepted, never stored or logged)"

# Fields that hold cardholder data: never stored, logged or echoed in full.
CARD_DATA_FIELDS = frozenset({"2", "14", "35", "36", "45", "52", "55"})

# Fields whose content must be decimal digits when present.
NUMERIC_FIELDS = frozenset({"2", "3", "4", "7", "11", "12", "13", "15", "18", "32", "33", "49", "70", "90"})
# ISO 8583 "an": letters and digits only; "ans": printable characters (here
# printable ASCII: a strict peer decodes these fields as ASCII).  Checked on
# the way in, so nothing we echo can go out malformed.  F48 has its own TLV
# codec; F35 (z) and F52 (b) are never echoed.
ALPHANUMERIC_FIELDS = frozenset({"37", "38", "39"})
PRINTABLE_FIELDS = frozenset({"41", "42", "43", "102"})
FIELD_TYPES = {**{f: "n" for f in NUMERIC_FIELDS}, **{f: "an" for f in ALPHANUMERIC_FIELDS},
               **{f: "ans" for f in PRINTABLE_FIELDS}, "48": "ans", "35": "z", "52": "b"}

# Presence per message: M mandatory, C conditional (see note), O optional,
# E echoed from the request, G set by the gateway.  Absent = not used.
# Repeats (0221, 0421) have no rows of their own: they use their original's
# (see :func:`base_mti`).
REQUEST_MTIS = ("0800", "0200", "0220", "0420")
RESPONSE_MTIS = ("0810", "0210", "0230", "0430")

# Advices (0220) carry a payment's fields and the 0230 echoes what a 0210
# echoes; a reversal (0420) carries the original's amount and F90, and its
# 0430 echoes the keys of both (F11/F7 its own, F90 the original's).
FIELD_USAGE: dict[str, dict[str, str]] = {
    "2": {"0200": "C", "0220": "C", "0420": "O"},
    "3": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "M", "0430": "E"},
    "4": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "M", "0430": "E"},
    "7": {"0800": "M", "0810": "E", "0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "M", "0430": "E"},
    "11": {"0800": "M", "0810": "E", "0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "M", "0430": "E"},
    "12": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "O", "0430": "E"},
    "13": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "O", "0430": "E"},
    "15": {"0800": "O", "0810": "G", "0210": "G"},
    "18": {"0200": "O", "0220": "O"},
    "32": {"0800": "O", "0810": "E", "0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "O", "0430": "E"},
    "33": {"0800": "O", "0810": "E", "0200": "O", "0210": "E", "0220": "O", "0230": "E", "0420": "O", "0430": "E"},
    "35": {"0200": "O", "0220": "O"},
    "37": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "M", "0430": "E"},
    "38": {"0210": "G"},
    "39": {"0810": "G", "0210": "G", "0220": "O", "0230": "G", "0420": "O", "0430": "G"},
    "41": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "M", "0430": "E"},
    "42": {"0200": "O", "0210": "E", "0220": "O", "0230": "E"},
    "43": {"0200": "O", "0220": "O"},
    "48": {"0200": "M", "0210": "G", "0220": "M", "0420": "O"},
    "49": {"0200": "M", "0210": "E", "0220": "M", "0230": "E", "0420": "O", "0430": "E"},
    "52": {"0200": "O", "0220": "O"},
    "70": {"0800": "M", "0810": "E"},
    "90": {"0420": "M", "0430": "E"},
    "102": {"0200": "C", "0220": "C"},
}

USAGE_NOTES = {
    "2": "PAN of the card that paid; F2 or F102 must be present. Only its first 6 and last 4 digits are kept.",
    "15": "The business date the payment settles on, MMDD, in the gateway's timezone (section 4.1). Approved "
          "payments only (F39 = 00 to a `50` request; not inquiries).",
    "38": "Six-character approval code, on approved payments only (F39 = 00 to a `50` request); never on "
          "an inquiry answer or a decline.",
    "102": "Account debited, when the customer paid from an account rather than a card.",
    "35": "Accepted for compatibility, never stored, logged or echoed.",
    "52": "Accepted for compatibility, never stored, logged or echoed.",
    "39": "In a 0220/0420: the switch's reason (e.g. 68 response too late, 17 customer cancellation), "
          "informational only. In an answer: the gateway's response code (section 7).",
    "90": "Original data elements: original MTI, STAN, F7, acquirer ID and forwarder ID (section 5.9).",
}


def base_mti(mti: str) -> str:
    """The MTI whose field usage a message follows: a repeat (``xx21``,
    ``xx31``, ...; last digit 1 in ISO 8583:1987) is laid out exactly like
    its first transmission (``0221`` -> ``0220``, ``0421`` -> ``0420``)."""
    if len(mti) == 4 and mti[3] == "1":
        return mti[:3] + "0"
    return mti


def echo_fields(response_mti: str) -> tuple[str, ...]:
    """Fields a response copies from its request, in field order."""
    mti = base_mti(response_mti)
    return tuple(sorted((f for f, usage in FIELD_USAGE.items() if usage.get(mti) == "E"), key=int))


def gateway_fields(response_mti: str) -> tuple[str, ...]:
    """Fields the gateway itself sets in a response (G), in field order."""
    mti = base_mti(response_mti)
    return tuple(sorted((f for f, usage in FIELD_USAGE.items() if usage.get(mti) == "G"), key=int))


def mandatory_fields(request_mti: str) -> tuple[str, ...]:
    """Fields a request must carry; a repeat must carry its original's."""
    mti = base_mti(request_mti)
    return tuple(sorted((f for f, usage in FIELD_USAGE.items() if usage.get(mti) == "M"), key=int))
