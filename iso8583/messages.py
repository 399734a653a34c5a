"""Typed ISO 8583 requests and responses, and the codec between them and bytes.

Gateway side: :func:`decode_request` turns a frame's payload into a
:class:`NetworkRequest` (0800), a :class:`BillRequest` (0200, and the 0220 /
0221 payment advice) or a :class:`ReversalRequest` (0420 / 0421), or raises
:class:`MessageFormatError` carrying the field and position; a request's
``respond(...)`` builds the typed :class:`Response`, whose ``encode()``
gives the bytes.  Client side (atm-sim, tests): :func:`encode_fields` and
:func:`decode_response`.

This module is the decoding: every field checked against its ISO type,
dates that name a moment, F3 and F48 against the dialect, and what a
format-error answer may echo of a body it could not read.  The typed
messages themselves live in :mod:`.message_types`; every name is exported
from here, the dialect's one import point.

Card data stops here: a typed request holds the masked PAN only; track data
and the PIN block are dropped at decode, and error texts never quote field
contents.
"""
from __future__ import annotations

from typing import Mapping

import iso8583 as _pyiso8583  # pyiso8583

from .bill_data import BillDataError, BillRequestData, BillResponseData
from .masking import mask_pan
from .message_types import (  # noqa: F401 -- exported from here, the dialect's import point
    _ANSWERED_MTIS,
    ADVICE_MTIS,
    FINANCIAL_MTIS,
    NETWORK_CODES,
    NETWORK_MTIS,
    PROCESSING_KINDS,
    REPEAT_MTIS,
    REVERSAL_MTIS,
    AcquirerKeys,
    BillRequest,
    DecodedResponse,
    MessageFormatError,
    NetworkRequest,
    OriginalData,
    RequestKind,
    Response,
    ReversalRequest,
    encode_fields,
    format_error_response,
    normalise_institution_id,
    response_mti,
)
from .spec import (  # noqa: F401 -- echo_fields, gateway_fields, mandatory_fields: exported before
    ALPHANUMERIC_FIELDS,
    CARD_DATA_FIELDS,
    NUMERIC_FIELDS,
    PRINTABLE_FIELDS,
    SPEC,
    echo_fields,
    gateway_fields,
    mandatory_fields,
)


def _safe_fields(doc: Mapping[str, object]) -> dict[str, str]:
    """Decoded fields minus bitmaps and every cardholder-data field."""
    return {
        k: v for k, v in doc.items()
        if k not in ("p", "1", "h", "t") and k not in CARD_DATA_FIELDS and isinstance(v, str)
    }


def _decode(payload: bytes) -> tuple[str | None, dict]:
    try:
        doc, _ = _pyiso8583.decode(bytes(payload), SPEC)
    except _pyiso8583.DecodeError as exc:
        partial = {k: v for k, v in (exc.doc_dec or {}).items() if k != exc.field}
        raise MessageFormatError(exc.msg, field=exc.field, position=exc.pos,
                                 mti=partial.get("t"), fields=_trusted_prefix(_safe_fields(partial))) from None
    except Exception as exc:  # pyiso8583 may raise plain errors on garbage
        raise MessageFormatError(f"undecodable message: {type(exc).__name__}") from None
    return doc.get("t"), doc


def _trusted_prefix(fields: Mapping[str, str]) -> dict[str, str]:
    """What a format-error answer may echo of a body that could not be read
    to its end: the fields before the first one that breaks its type or
    names no date -- a field sent longer than its fixed length (a 13-digit
    F4) shifts every field after it, and an answer must never carry keys
    or an amount read out of place.  F4 is never echoed from such a body:
    its digits may be a tenth of the amount sent."""
    out = {}
    for f in sorted(fields, key=int):
        value = fields[f]
        for group, ok, _reason in _FIELD_CHECKS:
            if f in group and not ok(value):
                return out
        if f in _DATE_FIELDS and not _valid_clock(*_DATE_FIELDS[f](value)):
            return out
        if f != "4":
            out[f] = value
    return out


def _is_alphanumeric(value: str) -> bool:
    return value.isascii() and value.isalnum()


def _is_printable_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable()


_FIELD_CHECKS = (
    (NUMERIC_FIELDS, lambda v: v.isascii() and v.isdigit(), "not numeric (n: digits only)"),
    (ALPHANUMERIC_FIELDS, _is_alphanumeric, "not alphanumeric (an: letters and digits only)"),
    (PRINTABLE_FIELDS, _is_printable_ascii, "not printable (ans: printable ASCII only)"),
)


def _check_numeric(mti: str, doc: Mapping[str, str]) -> None:
    """Each field's content against its ISO type (n, an, ans)."""
    for fields, ok, reason in _FIELD_CHECKS:
        for f in sorted(fields & set(doc), key=int):
            if not ok(doc[f]):
                # Like a decode error, the faulty field is left out of the
                # echo: a format-error answer must itself be well-formed.
                safe = {k: v for k, v in _safe_fields(doc).items() if k != f}
                raise MessageFormatError(reason, field=f, mti=mti, fields=safe)


def _valid_clock(mmdd: str | None, hhmmss: str | None) -> bool:
    """MMDD and hhmmss that name a real moment (29 February allowed: F7 and
    F13 carry no year)."""
    if mmdd is not None:
        if len(mmdd) != 4 or not mmdd.isdigit():
            return False
        month, day = int(mmdd[:2]), int(mmdd[2:4])
        if not 1 <= month <= 12 or not 1 <= day <= (29, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month]:
            return False
    if hhmmss is not None:
        if len(hhmmss) != 6 or not hhmmss.isdigit():
            return False
        if int(hhmmss[:2]) > 23 or int(hhmmss[2:4]) > 59 or int(hhmmss[4:6]) > 59:
            return False
    return True


# The date fields and how they split into (MMDD, hhmmss).
_DATE_FIELDS = {"7": lambda v: (v[:4], v[4:]), "12": lambda v: (None, v), "13": lambda v: (v, None),
                "15": lambda v: (v, None)}


def _check_semantics(mti: str, doc: Mapping[str, str], safe: Mapping[str, str]) -> None:
    """What the types alone let through: dates that name no moment, and (for
    bill requests, F3's type checked by the caller) the to-account positions
    of F3 and an inquiry that carries an amount."""
    for f, split in _DATE_FIELDS.items():
        if doc.get(f) and not _valid_clock(*split(doc[f])):
            # Still digits of the right length: echoed, so the switch can
            # match the answer by its keys (F7 is one of them).
            raise MessageFormatError("not a valid date/time", field=f, mti=mti, fields=safe)


def decode_request(payload: bytes, pan_hasher=None) -> NetworkRequest | BillRequest | ReversalRequest:
    """Decode one request frame.  Raises MessageFormatError when invalid.

    ``pan_hasher`` (a masking.PanHasher), when given, keys a hash of F2 into
    ``BillRequest.pan_hash``: the full PAN itself never leaves here."""
    mti, doc = _decode(payload)
    safe = _safe_fields(doc)
    if mti not in _ANSWERED_MTIS:
        raise MessageFormatError(f"unsupported message type {mti!r}", field="t", position=0, mti=mti, fields=safe)
    _check_numeric(mti, doc)
    for f in mandatory_fields(mti):
        if not doc.get(f):
            raise MessageFormatError("mandatory field missing", field=f, mti=mti, fields=safe)
    _check_semantics(mti, doc, safe)
    if mti in NETWORK_MTIS:
        return NetworkRequest(mti, safe)
    if mti in REVERSAL_MTIS:
        return _reversal(mti, doc, safe)
    kind = PROCESSING_KINDS.get(doc["3"][:2])
    if kind is None:
        raise MessageFormatError("processing code is neither bill inquiry (37) nor payment (50)",
                                 field="3", mti=mti, fields=safe)
    if doc["3"][4:6] != "00":
        raise MessageFormatError("processing code positions 5-6 (to account) must be 00", field="3", mti=mti,
                                 fields=safe)
    if kind is RequestKind.INQUIRY and int(doc.get("4") or "0") != 0:
        raise MessageFormatError("an inquiry's amount (F4) must be zero", field="4", mti=mti, fields=safe)
    if mti in ADVICE_MTIS and kind is not RequestKind.PAYMENT:
        # Only a debit can have happened without our answer; an inquiry
        # changes nothing, so there is nothing to complete.
        raise MessageFormatError("an advice must be a bill payment (50)", field="3", mti=mti, fields=safe)
    if not doc.get("2") and not doc.get("102"):
        raise MessageFormatError("PAN (F2) or account (F102) required", field="2", mti=mti, fields=safe)
    try:
        bill = BillRequestData.from_tlv(doc["48"])
    except BillDataError as exc:
        raise MessageFormatError(exc.reason, field="48", position=exc.position, mti=mti, fields=safe) from None
    return BillRequest(mti, safe, kind=kind, bill=bill, masked_pan=mask_pan(doc.get("2")),
                       pan_hash=pan_hasher(doc.get("2")) if pan_hasher is not None else None)


def _reversal(mti: str, doc: Mapping[str, str], safe: dict[str, str]) -> ReversalRequest:
    """A 0420/0421 whose mandatory fields are present and numeric.

    F48 is kept as sent but not parsed: the reversal is identified by F90 and
    F41 alone, and refusing one over bill data we do not need would make the
    switch repeat it for ever.
    """
    try:
        OriginalData.parse(doc["90"])
    except MessageFormatError as exc:
        rest = {k: v for k, v in safe.items() if k != "90"}
        raise MessageFormatError(exc.reason, field="90", mti=mti, fields=rest) from None
    return ReversalRequest(mti, safe, masked_pan=mask_pan(doc.get("2")))


def decode_response(payload: bytes) -> DecodedResponse:
    mti, doc = _decode(payload)
    fields = {k: v for k, v in doc.items() if k not in ("p", "1", "h", "t")}
    bill = None
    if fields.get("48"):
        try:
            bill = BillResponseData.from_tlv(fields["48"])
        except BillDataError as exc:
            raise MessageFormatError(exc.reason, field="48", position=exc.position, mti=mti) from None
    return DecodedResponse(mti, fields, bill)


def describe_fields(payload: bytes) -> dict[str, str]:
    """All decoded fields of any message with card data masked (for dumps)."""
    _, doc = _decode(payload)
    out = {}
    for k, v in doc.items():
        if k in ("p", "1", "h"):
            continue
        if k == "2":
            v = mask_pan(v)
        elif k in CARD_DATA_FIELDS:
            v = "[removed]"
        out[k] = v
    return out
