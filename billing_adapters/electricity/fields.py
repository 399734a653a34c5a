"""The mainframe's field encodings, as pure functions: EBCDIC text, zoned
decimal and packed decimal (COMP-3).

A COBOL host stores a number ``PIC S9(5)`` either *zoned* (one byte per
digit, ``0xF0``-``0xF9``, the sign in the zone nibble of the last byte:
``C`` plus, ``D`` minus, ``F`` unsigned) or *packed* (``COMP-3``: two digits
a byte, the sign in the last nibble).  Amounts travel this way, so every
check here is strict: a byte that is not a digit, a sign nibble that is not
a sign, a value that does not fit -- each is a :class:`FieldError`, never a
guess.  A wrong amount is worse than no amount.

Values are unscaled integers here; :mod:`.copybook` applies a field's scale.
"""
from __future__ import annotations

import codecs
import unicodedata

DEFAULT_CODE_PAGE = "cp037"

# Sign nibbles (IBM): C, A, E, F are plus (F: unsigned), D and B minus.
_PLUS = frozenset({0xC, 0xA, 0xE, 0xF})
_MINUS = frozenset({0xD, 0xB})
SIGN_PLUS, SIGN_MINUS, SIGN_UNSIGNED = 0xC, 0xD, 0xF


class FieldError(ValueError):
    """A value cannot be encoded into, or decoded from, its field."""


def check_code_page(name: str) -> str:
    """``name`` if it is a single-byte code page Python knows (cp037, cp500,
    cp1140, cp273...), else ValueError.  Our fixed-width layouts count bytes
    as characters, so a multi-byte encoding cannot be used."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown code page {name!r}") from None
    try:
        sample = "AZ09 ".encode(info.name)
    except UnicodeEncodeError:
        raise ValueError(f"code page {name!r} cannot encode letters and digits") from None
    every_byte = bytes(range(256)).decode(info.name, "replace")
    if len(sample) != 5 or len(every_byte) != 256 or len(b"\xc3\xa9".decode(info.name, "replace")) != 2:
        raise ValueError(f"code page {name!r} is not a single-byte code page")
    return info.name


def space(code_page: str = DEFAULT_CODE_PAGE) -> bytes:
    return " ".encode(code_page)


# --- text (PIC X) ----------------------------------------------------------------

def encode_text(value: str, length: int, code_page: str = DEFAULT_CODE_PAGE) -> bytes:
    """``value`` left-justified in ``length`` bytes, padded with spaces."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise FieldError(f"text {value!r} holds a control character")
    try:
        data = value.encode(code_page)
    except UnicodeEncodeError as exc:
        raise FieldError(f"text {value!r} has a character code page {code_page} lacks: {exc.object[exc.start]!r}") from None
    if len(data) > length:
        raise FieldError(f"text {value!r} is longer than its {length} bytes")
    return data + space(code_page) * (length - len(data))


def decode_text(data: bytes, code_page: str = DEFAULT_CODE_PAGE) -> str:
    """The text without its trailing spaces.  A control character (what a
    garbled or ASCII-sent field decodes to in EBCDIC) is an error."""
    text = data.decode(code_page)
    for position, char in enumerate(text):
        if unicodedata.category(char) == "Cc":
            raise FieldError(f"byte 0x{data[position]:02X} at {position} is not text in {code_page}")
    return text.rstrip(" ")


# --- zoned decimal (PIC 9 / PIC S9, DISPLAY) --------------------------------------

def encode_zoned(value: int, digits: int, *, signed: bool) -> bytes:
    _check_fits(value, digits, signed)
    text = f"{abs(value):0{digits}d}"
    out = bytearray(0xF0 | int(c) for c in text)
    if signed:
        out[-1] = ((SIGN_MINUS if value < 0 else SIGN_PLUS) << 4) | (out[-1] & 0x0F)
    return bytes(out)


def decode_zoned(data: bytes, *, signed: bool) -> int:
    if not data:
        raise FieldError("an empty zoned field")
    value = 0
    for position, byte in enumerate(data):
        zone, digit = byte >> 4, byte & 0x0F
        if digit > 9:
            raise FieldError(f"byte 0x{byte:02X} at {position} is not a zoned digit")
        last = position == len(data) - 1
        if not last and zone != 0xF or last and not signed and zone != 0xF:
            raise FieldError(f"byte 0x{byte:02X} at {position} has zone {zone:X}, not F")
        if last and signed and zone not in _PLUS and zone not in _MINUS:
            raise FieldError(f"byte 0x{byte:02X} at {position} has no sign zone")
        value = value * 10 + digit
    return -value if signed and data[-1] >> 4 in _MINUS else value


# --- packed decimal (COMP-3) ----------------------------------------------------

def packed_length(digits: int) -> int:
    """Bytes of a COMP-3 field of ``digits`` digits: digits and sign, two a byte."""
    return digits // 2 + 1


def encode_packed(value: int, digits: int, *, signed: bool) -> bytes:
    _check_fits(value, digits, signed)
    width = packed_length(digits) * 2 - 1  # an even digit count gets a leading 0 nibble
    nibbles = [int(c) for c in f"{abs(value):0{width}d}"]
    nibbles.append((SIGN_MINUS if value < 0 else SIGN_PLUS) if signed else SIGN_UNSIGNED)
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def decode_packed(data: bytes, digits: int, *, signed: bool) -> int:
    if len(data) != packed_length(digits):
        raise FieldError(f"a COMP-3 field of {digits} digits has {packed_length(digits)} bytes, not {len(data)}")
    nibbles = [n for byte in data for n in (byte >> 4, byte & 0x0F)]
    sign = nibbles.pop()
    if digits % 2 == 0 and nibbles[0] != 0:
        raise FieldError(f"the pad nibble of an even-digit COMP-3 field is {nibbles[0]:X}, not 0")
    value = 0
    for position, nibble in enumerate(nibbles):
        if nibble > 9:
            raise FieldError(f"nibble {nibble:X} at {position} is not a packed digit")
        value = value * 10 + nibble
    if signed and sign not in _PLUS and sign not in _MINUS or not signed and sign != SIGN_UNSIGNED:
        raise FieldError(f"sign nibble {sign:X} is not a {'sign' if signed else 'F (unsigned)'}")
    return -value if sign in _MINUS else value


def _check_fits(value: int, digits: int, signed: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"{value!r} is not an integer")
    if value < 0 and not signed:
        raise FieldError(f"{value} is negative in an unsigned field")
    if abs(value) >= 10 ** digits:
        raise FieldError(f"{value} does not fit in {digits} digits")
