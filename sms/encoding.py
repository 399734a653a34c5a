"""SMS text → SMPP ``short_message`` payloads: GSM 03.38 or UCS-2, split with UDH.

Pure functions, no I/O.  We do not use ``smpplib.gsm.make_parts`` because
(smpplib 2.2.4):

* its GSM table has ``§`` (0x5F) replaced by a back-tick filler, so ``§``
  cannot be sent and a real back-tick is silently sent as ``§``;
* it splits GSM text on bytes, so an escaped character (``€``, ``[``...: two
  septets) can be cut in half across two parts;
* it picks the concatenation reference at random, which makes the UDH
  untestable; here the caller passes it (the SMPP link keeps a counter).

GSM text is sent unpacked, one septet per octet, which is what SMPP
``data_coding`` 0 ("SMSC default alphabet") carries on the SMSCs we know.
UCS-2 is big-endian; a character outside the BMP is sent as a UTF-16 surrogate
pair (what handsets do) and the pair is never split across parts.

Concatenation, per SMSC (``[sms] concatenation``):

* ``udh8`` (default): a 6-octet UDH ``05 00 03 ref total seq`` in each part
  (153 GSM-7 septets / 67 UCS-2 units per part);
* ``udh16``: a 7-octet UDH ``06 08 04 ref_hi ref_lo total seq``
  (152 / 66 per part);
* ``sar``: no UDH; each part carries the SAR TLVs ``sar_msg_ref_num``,
  ``sar_total_segments``, ``sar_segment_seqnum`` and the SMSC builds the
  header on the air.  Parts are cut at 152 / 66 so that they fit whichever
  header (8- or 16-bit) the SMSC chooses.

Each part is a :class:`Part` carrying everything of it the submit_sm needs
(``short_message``, ``esm_class``, optional TLVs); the link sends what a part
carries and knows nothing of schemes.  The reference is chosen by
:class:`ReferenceCounter` (per destination, see its docstring).
"""
from __future__ import annotations

from dataclasses import dataclass

DATA_CODING_GSM7 = 0x00
DATA_CODING_UCS2 = 0x08
ESM_CLASS_DEFAULT = 0x00
ESM_CLASS_UDHI = 0x40

GSM7_SINGLE = 160
GSM7_PART = 153  # 160 septets - 7 for the 6-octet UDH (rounded up to septets)
UCS2_SINGLE = 70
UCS2_PART = 67  # 140 octets - 6 octet UDH = 134 octets = 67 UCS-2 units
GSM7_PART_16 = 152  # 160 septets - 8 for the 7-octet UDH
UCS2_PART_16 = 66  # (140 - 7) // 2
MAX_PARTS = 255

CONCAT_UDH8 = "udh8"
CONCAT_UDH16 = "udh16"
CONCAT_SAR = "sar"
CONCATENATION_SCHEMES = (CONCAT_UDH8, CONCAT_UDH16, CONCAT_SAR)
# Units per part of a concatenated message: (GSM-7 septets, UCS-2 units).
_PART_SIZES = {
    CONCAT_UDH8: (GSM7_PART, UCS2_PART),
    CONCAT_UDH16: (GSM7_PART_16, UCS2_PART_16),
    CONCAT_SAR: (GSM7_PART_16, UCS2_PART_16),
}
# How many distinct references a scheme has.
REFERENCE_MODULUS = {CONCAT_UDH8: 1 << 8, CONCAT_UDH16: 1 << 16, CONCAT_SAR: 1 << 16}

# GSM 03.38 default alphabet, position = code.  0x1B (escape) is not a
# character and is left out of the encoding map.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM7_BASIC) == 128
GSM7_ESCAPE = 0x1B
# The extension table: sent as ESC followed by this code.
GSM7_EXTENSION = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_ENCODE = {ch: bytes([i]) for i, ch in enumerate(GSM7_BASIC) if i != GSM7_ESCAPE}
_GSM7_ENCODE.update({ch: bytes([GSM7_ESCAPE, code]) for ch, code in GSM7_EXTENSION.items()})
_GSM7_EXTENSION_DECODE = {code: ch for ch, code in GSM7_EXTENSION.items()}


class MessageTooLong(ValueError):
    """More than 255 parts: no handset can reassemble it."""


@dataclass(frozen=True)
class Part:
    """One submit_sm's share of a message: ``short_message`` (UDH included
    when the scheme uses one), its ``esm_class`` and its optional TLVs
    (smpplib parameter names: the SAR ones)."""

    short_message: bytes
    esm_class: int = ESM_CLASS_DEFAULT
    tlvs: tuple[tuple[str, int], ...] = ()

    def submit_fields(self) -> dict:
        """The submit_sm fields this part sets."""
        return {"short_message": self.short_message, "esm_class": self.esm_class, **dict(self.tlvs)}


@dataclass(frozen=True)
class EncodedMessage:
    """``parts`` are complete ``short_message`` values (UDH included);
    ``segments`` the same parts with their esm_class and TLVs."""

    parts: list[bytes]
    data_coding: int
    esm_class: int
    segments: tuple[Part, ...] = ()
    scheme: str = CONCAT_UDH8

    def part(self, index: int) -> Part:
        if self.segments:
            return self.segments[index]
        return Part(self.parts[index], self.esm_class)

    # Code units of the whole text: septets for GSM-7 (an escaped character
    # counts two), UTF-16 units for UCS-2 (a surrogate pair counts two).
    units: int = 0


def measure(text: str) -> tuple[int, int]:
    """``(data_coding, units)`` of ``text`` without splitting it."""
    units = gsm7_units(text)
    if units is not None:
        return DATA_CODING_GSM7, sum(len(u) for u in units)
    return DATA_CODING_UCS2, len(text.encode("utf-16-be")) // 2


def gsm7_units(text: str) -> list[bytes] | None:
    """Each character's unpacked septets, or None if ``text`` is not GSM-7."""
    try:
        return [_GSM7_ENCODE[ch] for ch in text]
    except KeyError:
        return None


def decode_gsm7(data: bytes) -> str:
    """Unpacked GSM 03.38 septets → text (used by the SMSC simulator)."""
    out = []
    escaped = False
    for octet in data:
        if escaped:
            out.append(_GSM7_EXTENSION_DECODE.get(octet, GSM7_BASIC[octet & 0x7F]))
            escaped = False
        elif octet == GSM7_ESCAPE:
            escaped = True
        else:
            out.append(GSM7_BASIC[octet & 0x7F])
    return "".join(out)


def _ucs2_units(text: str) -> list[bytes]:
    # One entry per character: 2 octets, or 4 for a surrogate pair.
    return [ch.encode("utf-16-be") for ch in text]


def _pack(units: list[bytes], limit: int, unit_size: int) -> list[bytes]:
    """Greedy split into chunks of at most ``limit`` code units, never
    cutting a character (an escape pair or a surrogate pair) in two."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    used = 0
    for unit in units:
        size = len(unit) // unit_size
        if used + size > limit:
            chunks.append(b"".join(current))
            current, used = [], 0
        current.append(unit)
        used += size
    if current:
        chunks.append(b"".join(current))
    return chunks


def concatenation_udh(reference: int, total: int, sequence: int) -> bytes:
    """The 6-octet UDH of a concatenated part (IEI 0x00, 8-bit reference)."""
    return bytes([0x05, 0x00, 0x03, reference & 0xFF, total, sequence])


def concatenation_udh16(reference: int, total: int, sequence: int) -> bytes:
    """The 7-octet UDH of a concatenated part (IEI 0x08, 16-bit reference)."""
    return bytes([0x06, 0x08, 0x04, (reference >> 8) & 0xFF, reference & 0xFF, total, sequence])


def _segment(scheme: str, reference: int, total: int, sequence: int, chunk: bytes) -> Part:
    if scheme == CONCAT_UDH8:
        return Part(concatenation_udh(reference, total, sequence) + chunk, ESM_CLASS_UDHI)
    if scheme == CONCAT_UDH16:
        return Part(concatenation_udh16(reference, total, sequence) + chunk, ESM_CLASS_UDHI)
    return Part(chunk, ESM_CLASS_DEFAULT, (("sar_msg_ref_num", reference & 0xFFFF),
                                           ("sar_total_segments", total), ("sar_segment_seqnum", sequence)))


def split_message(text: str, *, reference: int = 0, scheme: str = CONCAT_UDH8) -> EncodedMessage:
    """Encode ``text`` for submit_sm, as few parts as the alphabet allows.

    ``reference`` identifies the parts of one message to the handset; the
    caller should vary it between messages to the same subscriber
    (:class:`ReferenceCounter`).  ``scheme`` is one of
    :data:`CONCATENATION_SCHEMES`.
    """
    if scheme not in _PART_SIZES:
        raise ValueError(f"concatenation scheme must be one of {', '.join(CONCATENATION_SCHEMES)}")
    units = gsm7_units(text)
    gsm_part, ucs2_part = _PART_SIZES[scheme]
    if units is not None:
        data_coding, unit_size, single, part = DATA_CODING_GSM7, 1, GSM7_SINGLE, gsm_part
    else:
        units = _ucs2_units(text)
        data_coding, unit_size, single, part = DATA_CODING_UCS2, 2, UCS2_SINGLE, ucs2_part
    total_units = sum(len(u) for u in units) // unit_size
    if total_units <= single:
        whole = b"".join(units)
        return EncodedMessage([whole], data_coding, ESM_CLASS_DEFAULT, (Part(whole),), scheme, total_units)
    chunks = _pack(units, part, unit_size)
    if len(chunks) > MAX_PARTS:
        raise MessageTooLong(f"{len(chunks)} parts (at most {MAX_PARTS})")
    segments = tuple(_segment(scheme, reference, len(chunks), i, chunk) for i, chunk in enumerate(chunks, start=1))
    return EncodedMessage([s.short_message for s in segments], data_coding, segments[0].esm_class, segments,
                          scheme, total_units)


class ReferenceCounter:
    """The concatenation reference per destination, never restarting at a start.

    A handset joins parts by (sender, reference, total); two messages to the
    same handset must not share a reference while either may be incomplete.
    A counter that restarts at every start (or at a random value) would
    reuse the previous run's references.  Instead each destination's
    reference is a *hybrid clock*: ``max(previous + 1, whole seconds of
    now)``, modulo the scheme's 256 or 65,536.  Across a restart nothing
    needs persisting: a handset that got at most one message per second
    (a receipt per payment) sees a reference that moved on since the last
    run, and a burst within one run still gets consecutive references.
    It wraps only after 256 s (8-bit) or about 18 h (16-bit), long after the
    earlier message was joined or given up by the handset.

    Memory is bounded: an entry behind the clock carries no information (the
    clock alone gives the same answer) and is dropped once the table is big.
    """

    def __init__(self, modulus: int = 256, *, max_entries: int = 10_000):
        self.modulus = modulus
        self.max_entries = max_entries
        self._last: dict[str, int] = {}

    def next(self, destination: str, now: float) -> int:
        second = int(now)
        value = max(self._last.get(destination, -1) + 1, second)
        if len(self._last) >= self.max_entries and destination not in self._last:
            self._last = {d: v for d, v in self._last.items() if v >= second}
            if len(self._last) >= self.max_entries:  # a flood within one second
                self._last.pop(next(iter(self._last)))
        self._last[destination] = value
        return value % self.modulus


# Greek capitals drawn exactly like Latin ones: Greek operators send capital
# Greek text in GSM-7 this way (the ten others, ΔΦΓΛΩΠΨΣΘΞ, are in GSM-7).
_GREEK_LOOKALIKES = str.maketrans({
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Accented capitals lose the accent (GSM-7 has none); Ώ keeps its Ω.
    "Ά": "A", "Έ": "E", "Ή": "H", "Ί": "I", "Ό": "O", "Ύ": "Y", "Ώ": "Ω", "Ϊ": "I", "Ϋ": "Y",
})


def fold_to_gsm7(text: str) -> str:
    """``text`` with its capital Greek letters written as GSM-7 can carry them,
    when that makes the whole text GSM-7; otherwise ``text`` unchanged.

    A Greek receipt in capitals then costs 160 characters a part instead of
    70 (what Greek senders do).  Only capitals are touched, and only glyphs
    that look the same; lower-case Greek, Arabic or an emoji leave the text
    as it is (it goes as UCS-2).
    """
    if gsm7_units(text) is not None:
        return text
    folded = text.translate(_GREEK_LOOKALIKES)
    return folded if gsm7_units(folded) is not None else text
