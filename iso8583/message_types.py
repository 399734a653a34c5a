"""The typed ISO 8583 messages of our dialect, and how each is answered.

A :class:`NetworkRequest` (0800), a :class:`BillRequest` (0200, and the
0220 / 0221 payment advice) or a :class:`ReversalRequest` (0420 / 0421)
holds a decoded request's fields, card data removed; its ``respond(...)``
builds the typed :class:`Response` with exactly the fields the interface
lists for the answer, whose ``encode()`` gives the bytes
(:func:`encode_fields`).  :class:`DecodedResponse` is a response as a
client (atm-sim, tests) reads it.

The gateway finds a transaction again by its :class:`AcquirerKeys`: a
payment or advice by ``BillRequest.keys``, the original of a reversal by
``ReversalRequest.original_keys``.  Both normalise the acquirer ID the same
way (:func:`normalise_institution_id`), because F32 is an LLVAR (``123456``)
while F90 carries the same ID zero-filled to 11 digits (``00000123456``).

Decoding and validating bytes from a peer is :mod:`.messages`, which
exports every name of this module too.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

import iso8583 as _pyiso8583  # pyiso8583

from .bill_data import BillRequestData, BillResponseData
from .masking import mask_text
from .spec import SPEC, echo_fields, gateway_fields


NETWORK_MTIS = frozenset({"0800"})
FINANCIAL_MTIS = frozenset({"0200"})
ADVICE_MTIS = frozenset({"0220", "0221"})
REVERSAL_MTIS = frozenset({"0420", "0421"})
# Second and later transmissions: laid out and answered like the first.
REPEAT_MTIS = frozenset({"0221", "0421"})
# Every request MTI decode_request accepts and format_error_response answers.
_ANSWERED_MTIS = NETWORK_MTIS | FINANCIAL_MTIS | ADVICE_MTIS | REVERSAL_MTIS


class RequestKind(enum.Enum):
    INQUIRY = "inquiry"
    PAYMENT = "payment"


# Processing code (F3) positions 1-2: transaction type.
PROCESSING_KINDS = {"37": RequestKind.INQUIRY, "50": RequestKind.PAYMENT}

NETWORK_CODES = {"001": "sign_on", "002": "sign_off", "201": "cut_over", "301": "echo"}


class MessageFormatError(ValueError):
    """A message that is not valid in our dialect.

    ``field`` and ``position`` say where (position is the byte offset in the
    message, when known).  ``mti`` and ``fields`` hold what could be decoded
    before the error -- never card data -- so the gateway can still answer
    with a format-error response carrying the keys the switch matches on.
    """

    def __init__(self, reason: str, *, field: str | None = None, position: int | None = None,
                 mti: str | None = None, fields: Mapping[str, str] | None = None):
        where = []
        if field is not None:
            where.append(f"field {field}")
        if position is not None:
            where.append(f"pos {position}")
        text = mask_text(reason) + (f" ({', '.join(where)})" if where else "")
        super().__init__(text)
        self.reason = mask_text(reason)
        self.field = field
        self.position = position
        self.mti = mti
        self.fields = dict(fields or {})


@dataclass(frozen=True)
class Response:
    """A response ready to encode: its MTI and field values (strings)."""

    mti: str
    fields: Mapping[str, str]

    @property
    def response_code(self) -> str | None:
        return self.fields.get("39")

    def encode(self) -> bytes:
        return encode_fields(self.mti, self.fields)


def response_mti(request_mti: str) -> str:
    """0200 -> 0210, 0800 -> 0810, 0221 -> 0230 (repeats answer as originals)."""
    base = request_mti[:2] + str(int(request_mti[2]) + 1) + "0"
    return base


def format_error_response(error: MessageFormatError, code: str) -> Response | None:
    """The answer to an invalid request: its response MTI, the echo fields it
    had, and F39 = ``code``.  None when the MTI is not a request we answer
    (then the frame cannot be answered at all)."""
    if error.mti not in _ANSWERED_MTIS:
        return None
    mti = response_mti(error.mti)
    fields = {f: error.fields[f] for f in echo_fields(mti) if f in error.fields}
    fields["39"] = code
    return Response(mti, fields)


def normalise_institution_id(value: str) -> str:
    """An institution ID (F32, F33, or the IDs inside F90) as the gateway
    compares and stores it: leading zeros stripped, ``"0"`` if all zeros.

    F32 is a variable-length field (``123456``) while F90 carries the same
    ID right-justified and zero-filled to 11 digits (``00000123456``); a
    reversal must find its original whichever form each message used.
    """
    return value.lstrip("0") or "0"


@dataclass(frozen=True)
class AcquirerKeys:
    """What identifies an acquirer's transaction: F32 + F41 + F11 + F7.

    ``acquirer_id`` is normalised (:func:`normalise_institution_id`), so the
    keys of a payment, of its advice and of the F90 of its reversal compare
    equal.  The other three are taken as sent: they are fixed-length fields
    in every message that carries them.
    """

    acquirer_id: str
    terminal_id: str
    stan: str
    transmission_datetime: str


_F90_LENGTH = 42


@dataclass(frozen=True)
class OriginalData:
    """F90, Original Data Elements, of a reversal: which transaction it undoes.

    On the wire, n42: original MTI (4), original STAN (6), original F7 (10),
    original acquirer ID (11) and original forwarder ID (11), the IDs
    right-justified and zero-filled.  Here the IDs are normalised
    (:func:`normalise_institution_id`) so they compare with F32/F33 as the
    gateway stores them, and a forwarder ID of all zeros (none) is None.
    """

    mti: str
    stan: str
    transmission_datetime: str
    acquirer_id: str
    forwarder_id: str | None

    @classmethod
    def parse(cls, f90: str) -> "OriginalData":
        """Split an F90 value; MessageFormatError (field 90) unless 42 digits."""
        if len(f90) != _F90_LENGTH:
            raise MessageFormatError(f"original data elements must be {_F90_LENGTH} digits, not {len(f90)}",
                                     field="90")
        if not f90.isdigit() or not f90.isascii():
            raise MessageFormatError("original data elements must be digits", field="90")
        forwarder = normalise_institution_id(f90[31:42])
        return cls(
            mti=f90[0:4],
            stan=f90[4:10],
            transmission_datetime=f90[10:20],
            acquirer_id=normalise_institution_id(f90[20:31]),
            forwarder_id=None if forwarder == "0" else forwarder,
        )

    def format(self) -> str:
        """The 42-digit F90 value (``parse(x.format()) == x`` for parsed values)."""
        value = (f"{self.mti:0>4}{self.stan:0>6}{self.transmission_datetime:0>10}"
                 f"{self.acquirer_id:0>11}{self.forwarder_id or '':0>11}")
        if len(value) != _F90_LENGTH or not value.isdigit():
            raise MessageFormatError("original data elements do not fit n42", field="90")
        return value


@dataclass(frozen=True)
class _Request:
    mti: str
    fields: Mapping[str, str] = field(repr=False)  # decoded, card data removed

    @property
    def stan(self) -> str:
        return self.fields["11"]

    @property
    def transmission_datetime(self) -> str:
        return self.fields["7"]

    @property
    def is_repeat(self) -> bool:
        """A 0221 or 0421: the switch got no answer to an earlier send.  It is
        answered exactly like the first transmission."""
        return self.mti in REPEAT_MTIS

    @property
    def reason_code(self) -> str | None:
        """F39 in a request: why the switch sent an advice or reversal
        (e.g. 68 late response, 17 customer cancellation).  Informational."""
        return self.fields.get("39")

    def respond(self, code: str, extra: Mapping[str, str] | None = None) -> Response:
        """The answer: the echo fields this request had, ``extra`` and F39.

        Of ``extra`` only the fields the response's table sets (G) are kept,
        so the gateway never sends a field the interface does not list for
        that message -- a 0230 has no F15, F38 or F48 even when the code that
        answers an advice shares the 0210's ``respond_bill`` call.
        """
        mti = response_mti(self.mti)
        fields = {f: self.fields[f] for f in echo_fields(mti) if f in self.fields}
        allowed = set(gateway_fields(mti))
        fields.update({f: v for f, v in (extra or {}).items() if f in allowed})
        fields["39"] = code
        return Response(mti, fields)


@dataclass(frozen=True)
class NetworkRequest(_Request):
    """0800: sign-on (001), sign-off (002) or echo test (301)."""

    @property
    def code(self) -> str:
        return self.fields["70"]

    @property
    def action(self) -> str | None:
        return NETWORK_CODES.get(self.code)


@dataclass(frozen=True)
class _MoneyRequest(_Request):
    """What payments, advices and reversals share: the money fields."""

    @property
    def amount(self) -> int:
        """F4 in minor units (for a reversal: the original's full amount)."""
        return int(self.fields["4"])

    @property
    def currency(self) -> str | None:
        """F49 (mandatory on 0200/0220, optional on a reversal)."""
        return self.fields.get("49")

    @property
    def processing_code(self) -> str:
        return self.fields["3"]

    @property
    def rrn(self) -> str:
        """F37 (for a reversal: the original's retrieval reference number)."""
        return self.fields["37"]


@dataclass(frozen=True)
class BillRequest(_MoneyRequest):
    """0200 bill inquiry (F3 37xx00) or bill payment (F3 50xx00), or a
    0220/0221 payment advice (always F3 50xx00).

    An advice carries the same fields and the same keys as the 0200 it
    completes: the switch sends it when it debited the customer but never
    got our 0210, so the gateway must end with that payment posted once.
    """

    kind: RequestKind = RequestKind.INQUIRY
    bill: BillRequestData | None = None
    masked_pan: str | None = None
    # HMAC of the PAN (masking.PanHasher) when the gateway has the key.
    pan_hash: str | None = field(default=None, repr=False)

    @property
    def is_advice(self) -> bool:
        return self.mti in ADVICE_MTIS

    @property
    def keys(self) -> AcquirerKeys:
        """F32 (normalised) + F41 + F11 + F7: equal for a 0200, its 0220/0221
        advice and the ``original_keys`` of its 0420/0421 reversal."""
        return AcquirerKeys(normalise_institution_id(self.fields["32"]), self.fields["41"],
                            self.fields["11"], self.fields["7"])

    @property
    def account(self) -> str | None:
        return self.fields.get("102")

    def respond_bill(self, code: str, *, bill: BillResponseData | None = None,
                     auth_code: str | None = None, settlement_date: str | None = None) -> Response:
        extra = {}
        if settlement_date:
            extra["15"] = settlement_date
        if auth_code:
            extra["38"] = auth_code
        if bill is not None:
            tlv = bill.to_tlv()
            if tlv:
                extra["48"] = tlv
        return self.respond(code, extra)


@dataclass(frozen=True)
class ReversalRequest(_MoneyRequest):
    """0420 reversal or its 0421 repeat: undo the transaction named in F90.

    Its own F11 and F7 identify the reversal message (a new STAN, its own
    transmission time); the original's keys come from F90 plus this
    message's F41.  Every reversal is acknowledged (0430, F39 00) once it is
    durable, including one whose original the gateway never saw.
    """

    masked_pan: str | None = None

    @property
    def original(self) -> OriginalData:
        return OriginalData.parse(self.fields["90"])

    @property
    def original_keys(self) -> AcquirerKeys:
        """The keys the original 0200/0220 was journaled under
        (``BillRequest.keys`` of that message)."""
        original = self.original
        return AcquirerKeys(original.acquirer_id, self.fields["41"], original.stan,
                            original.transmission_datetime)


def encode_fields(mti: str, fields: Mapping[str, str]) -> bytes:
    """Encode an MTI and field values with the dialect's spec."""
    doc = {"t": mti, **{k: v for k, v in fields.items() if v is not None}}
    try:
        raw, _ = _pyiso8583.encode(doc, SPEC)
    except _pyiso8583.EncodeError as exc:
        raise MessageFormatError(str(exc), field=getattr(exc, "field", None), mti=mti) from None
    return bytes(raw)


@dataclass(frozen=True)
class DecodedResponse:
    """A response as a client (atm-sim, tests) reads it."""

    mti: str
    fields: Mapping[str, str]
    bill: BillResponseData | None

    @property
    def response_code(self) -> str | None:
        return self.fields.get("39")
