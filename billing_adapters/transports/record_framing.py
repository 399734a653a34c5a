"""Records cut from a TCP byte stream, sans IO: a binary length prefix (2 or
4 bytes, big-endian, not counting itself) or fixed-length records.

Bytes in, whole records out (:meth:`RecordFramer.feed`); a record in, its
frame out (:meth:`RecordFramer.frame`).  A length of zero or beyond
``max_record`` breaks the stream (:class:`FramingError`): nothing after it
can be trusted, so the link using it is dropped.  Used by the record link
(:mod:`.tcp_records`) and the simulators that speak to it.
"""
from __future__ import annotations

FRAMINGS = ("length2", "length4", "fixed")
DEFAULT_MAX_RECORD = 4096


class FramingError(ValueError):
    """The byte stream cannot be cut into records: the link is unusable."""


class RecordFramer:
    """Cuts a byte stream into records and frames records for sending."""

    def __init__(self, framing: str = "length2", *, record_length: int | None = None,
                 max_record: int = DEFAULT_MAX_RECORD):
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
        if framing == "fixed" and not record_length:
            raise ValueError("fixed framing needs a record_length")
        self.framing = framing
        self.prefix = {"length2": 2, "length4": 4, "fixed": 0}[framing]
        self.max_record = min(max_record, 0xFFFF) if self.prefix == 2 else max_record
        self.record_length = record_length
        if framing == "fixed" and record_length > self.max_record:
            raise ValueError(f"record_length {record_length} exceeds max_record {self.max_record}")
        self._buffer = bytearray()

    def frame(self, record: bytes) -> bytes:
        if self.framing == "fixed":
            if len(record) != self.record_length:
                raise FramingError(f"record of {len(record)} bytes, fixed length is {self.record_length}")
            return record
        if not record or len(record) > self.max_record:
            raise FramingError(f"record of {len(record)} bytes (1-{self.max_record} allowed)")
        return len(record).to_bytes(self.prefix, "big") + record

    def feed(self, data: bytes) -> list[bytes]:
        """The whole records now available; FramingError when the stream is
        broken (a zero or over-long length): nothing after it can be trusted."""
        self._buffer += data
        records = []
        while True:
            if self.framing == "fixed":
                size, start = self.record_length, 0
            else:
                if len(self._buffer) < self.prefix:
                    break
                size, start = int.from_bytes(self._buffer[:self.prefix], "big"), self.prefix
                if size == 0 or size > self.max_record:
                    raise FramingError(f"record length {size} (1-{self.max_record} allowed)")
            if len(self._buffer) < start + size:
                break
            records.append(bytes(self._buffer[start:start + size]))
            del self._buffer[:start + size]
        return records

    @property
    def pending(self) -> int:
        """Bytes of a record not yet complete."""
        return len(self._buffer)
