"""Length-header framing for ISO 8583 over TCP, sans-IO.

Two headers are in common use and a listener picks one:

- ``binary2``: a 2-byte big-endian unsigned length (most switches);
- ``ascii4``: 4 ASCII decimal digits.

The length counts the message that follows, not the header.  The framer is
fed whatever TCP delivered and returns the complete frames; a header that
announces more than ``max_length`` (or is not digits, for ``ascii4``) raises
:class:`FramingError`, after which the stream cannot be trusted and the
connection should be closed.
"""
from __future__ import annotations

import struct

HEADERS = ("binary2", "ascii4")


class FramingError(ValueError):
    """The byte stream is not a sequence of well-formed frames."""


def header_size(kind: str) -> int:
    _check_kind(kind)
    return 2 if kind == "binary2" else 4


def _check_kind(kind: str) -> None:
    if kind not in HEADERS:
        raise ValueError(f"unknown framing {kind!r}; expected one of {', '.join(HEADERS)}")


def encode_frame(payload: bytes, kind: str = "binary2") -> bytes:
    """Prefix ``payload`` with its length header."""
    _check_kind(kind)
    if kind == "binary2":
        if len(payload) > 0xFFFF:
            raise FramingError(f"message of {len(payload)} bytes does not fit a 2-byte header")
        return struct.pack(">H", len(payload)) + payload
    if len(payload) > 9999:
        raise FramingError(f"message of {len(payload)} bytes does not fit a 4-digit header")
    return b"%04d" % len(payload) + payload


class Framer:
    """Accumulates stream bytes and yields complete frames."""

    def __init__(self, kind: str = "binary2", max_length: int = 8192):
        _check_kind(kind)
        self.kind = kind
        self.max_length = max_length
        self._size = header_size(kind)
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= self._size:
            length = self._read_header(self._buffer[: self._size])
            end = self._size + length
            if len(self._buffer) < end:
                break
            frames.append(self._buffer[self._size : end])
            self._buffer = self._buffer[end:]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def _read_header(self, header: bytes) -> int:
        if self.kind == "binary2":
            (length,) = struct.unpack(">H", header)
        else:
            if not header.isdigit():
                raise FramingError(f"4-digit length header is not digits: {header!r}")
            length = int(header)
        if length == 0:
            raise FramingError("zero-length frame")
        if length > self.max_length:
            raise FramingError(f"frame of {length} bytes exceeds the maximum of {self.max_length}")
        return length
