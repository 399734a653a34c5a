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
MAX_PARTS = 255

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
class EncodedMessage:
    """``parts`` are complete ``short_message`` values (UDH included)."""

    parts: list[bytes]
    data_coding: int
    esm_class: int


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


def split_message(text: str, *, reference: int = 0) -> EncodedMessage:
    """Encode ``text`` for submit_sm, as few parts as the alphabet allows.

    ``reference`` identifies the parts of one message to the handset; the
    caller should vary it between messages to the same subscriber.
    """
    units = gsm7_units(text)
    if units is not None:
        data_coding, unit_size, single, part = DATA_CODING_GSM7, 1, GSM7_SINGLE, GSM7_PART
    else:
        units = _ucs2_units(text)
        data_coding, unit_size, single, part = DATA_CODING_UCS2, 2, UCS2_SINGLE, UCS2_PART
    total_units = sum(len(u) for u in units) // unit_size
    if total_units <= single:
        return EncodedMessage([b"".join(units)], data_coding, ESM_CLASS_DEFAULT)
    chunks = _pack(units, part, unit_size)
    if len(chunks) > MAX_PARTS:
        raise MessageTooLong(f"{len(chunks)} parts (at most {MAX_PARTS})")
    parts = [
        concatenation_udh(reference, len(chunks), i) + chunk
        for i, chunk in enumerate(chunks, start=1)
    ]
    return EncodedMessage(parts, data_coding, ESM_CLASS_UDHI)
