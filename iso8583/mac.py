"""Message authentication: ISO 9797-1 MAC algorithm 3 (the "retail MAC").

Algorithm 3 with a double-length key K = K1 || K2 (16 bytes): the padded
message is enciphered with single DES under K1 in CBC mode (IV zero); the
last block is then deciphered under K2 and enciphered again under K1.  The
result is 8 bytes.  This is ANSI X9.19's retail MAC, the usual MAC of ISO
8583 links between switches.

Padding: ISO 9797-1 **padding method 1** by default (zero bytes up to a
multiple of 8; nothing added to a message that already is one), the common
ISO 8583 / X9.19 practice; a peer may be configured for **method 2** (0x80,
then zeros), which some networks use.  Both sides must agree.

Where the MAC sits in our dialect (ASCII, hexadecimal bitmaps): in **F64**,
or in **F128** when the message has a secondary bitmap, as 16 hexadecimal
characters (the 8 MAC bytes), and it must be the message's last field.  It
is computed over every byte of the message before it: MTI, bitmaps (with
the MAC field's bit set) and all other fields, length prefixes included --
i.e. the message less its last 16 bytes.

DES comes from the ``cryptography`` package (already needed for TLS, so no
second cryptographic library).  Pure: bytes in, bytes out, no I/O.
"""
from __future__ import annotations

import binascii
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 keeps DES/3DES among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

BLOCK = 8
MAC_HEX_LENGTH = 16  # the 8 MAC bytes as hexadecimal characters on the wire
PADDING_METHODS = (1, 2)
_MTI = 4
_BITMAP = 16  # one bitmap as 16 hexadecimal characters


class MacError(ValueError):
    """A message whose MAC is missing, misplaced or wrong (``reason`` says
    which, for the log; never a key or a MAC value)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MacKey:
    """A double-length DES key (K1 || K2).  Its repr never shows the key."""

    key: bytes = field(repr=False)
    padding: int = 1

    def __post_init__(self):
        if len(self.key) != 16:
            raise ValueError("a retail MAC key is 16 bytes (32 hexadecimal characters)")
        if self.key[:8] == self.key[8:]:
            # K1 == K2 makes algorithm 3 a plain single-DES CBC-MAC.
            raise ValueError("the two halves of the MAC key must differ")
        if self.padding not in PADDING_METHODS:
            raise ValueError(f"padding method must be one of {PADDING_METHODS}")

    @classmethod
    def from_hex(cls, text: str, padding: int = 1) -> "MacKey":
        text = "".join(text.split())
        if len(text) != 32:
            raise ValueError("a retail MAC key is 32 hexadecimal characters")
        try:
            key = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise ValueError("a retail MAC key is 32 hexadecimal characters") from None
        return cls(key, padding)

    def check_value(self) -> str:
        """The key check value operators compare (3DES of eight zero bytes,
        first 3 bytes): proves which key is loaded without showing it."""
        enc = Cipher(TripleDES(self.key + self.key[:8]), modes.ECB()).encryptor()
        return (enc.update(bytes(BLOCK)) + enc.finalize())[:3].hex().upper()


def pad(data: bytes, method: int = 1) -> bytes:
    """ISO 9797-1 padding method 1 (zeros, none for a whole block; an empty
    message gets one block) or method 2 (0x80 then zeros)."""
    if method == 2:
        data = data + b"\x80"
    elif method != 1:
        raise ValueError(f"padding method must be one of {PADDING_METHODS}")
    if not data:
        return bytes(BLOCK)
    return data + bytes(-len(data) % BLOCK)


def retail_mac(key: bytes, data: bytes, padding: int = 1) -> bytes:
    """ISO 9797-1 MAC algorithm 3 of ``data`` under the 16-byte ``key``."""
    if len(key) != 16:
        raise ValueError("a retail MAC key is 16 bytes")
    k1, k2 = key[:8], key[8:]
    # Single DES is 3DES with K1 = K2 = K3 (the 24-byte form cryptography wants).
    cbc = Cipher(TripleDES(k1 * 3), modes.CBC(bytes(BLOCK))).encryptor()
    chained = cbc.update(pad(data, padding)) + cbc.finalize()
    last = chained[-BLOCK:]
    step = Cipher(TripleDES(k2 * 3), modes.ECB()).decryptor()
    last = step.update(last) + step.finalize()
    final = Cipher(TripleDES(k1 * 3), modes.ECB()).encryptor()
    return final.update(last) + final.finalize()


def _hex64(text: bytes) -> int | None:
    """16 hexadecimal characters as an integer, None if they are not."""
    if len(text) != _BITMAP or not all(c in b"0123456789ABCDEFabcdef" for c in text):
        return None
    return int(text, 16)


def _bitmaps(payload: bytes) -> tuple[int, int]:
    """The message's bitmaps as one integer (bit 1 = the most significant
    of 128) and the number of bitmap characters; MacError if unreadable."""
    primary = _hex64(payload[_MTI:_MTI + _BITMAP])
    if primary is None:
        raise MacError("bitmap unreadable")
    if not primary >> 63:
        return primary << 64, _BITMAP
    secondary = _hex64(payload[_MTI + _BITMAP:_MTI + 2 * _BITMAP])
    if secondary is None:
        raise MacError("secondary bitmap unreadable")
    return primary << 64 | secondary, 2 * _BITMAP


def _bit(number: int) -> int:
    return 1 << (128 - number)


def mac_field(payload: bytes) -> str:
    """Where this message's MAC belongs: "128" with a secondary bitmap, else "64"."""
    bits, _ = _bitmaps(payload)
    return "128" if bits & _bit(1) else "64"


def verify(payload: bytes, key: MacKey) -> None:
    """Check the MAC of a received message; MacError unless it is present,
    the last field, and right.  Compared in constant time."""
    bits, _ = _bitmaps(payload)
    number = 128 if bits & _bit(1) else 64
    if not bits & _bit(number):
        raise MacError(f"MAC missing (F{number})")
    if bits & (_bit(number) - 1):
        raise MacError(f"MAC (F{number}) is not the last field")
    if len(payload) < _MTI + _BITMAP + MAC_HEX_LENGTH:
        raise MacError("message too short for a MAC")
    sent = payload[-MAC_HEX_LENGTH:].upper()
    expected = retail_mac(key.key, payload[:-MAC_HEX_LENGTH], key.padding).hex().upper().encode()
    if not hmac.compare_digest(sent, expected):
        raise MacError(f"MAC (F{number}) wrong")


def sign(payload: bytes, key: MacKey) -> bytes:
    """``payload`` (an encoded message without a MAC) with its MAC added:
    the MAC field's bit set, the MAC computed over the result and appended
    as the last field."""
    bits, size = _bitmaps(payload)
    number = 128 if bits & _bit(1) else 64
    if bits & (_bit(number) | (_bit(number) - 1)):
        raise ValueError(f"the message already has F{number} or a field after it")
    if number == 64:
        start, value = _MTI, (bits | _bit(64)) >> 64
    else:
        start, value = _MTI + _BITMAP, (bits | _bit(128)) & ((1 << 64) - 1)
    bitmap = f"{value:016X}".encode("ascii")
    marked = payload[:start] + bitmap + payload[start + _BITMAP:]
    return marked + retail_mac(key.key, marked, key.padding).hex().upper().encode("ascii")
