"""An ISO 8583 client written from docs/iso8583-interface.md alone.

It shares no code with the gateway: no pyiso8583, no ``billgw`` import.
Messages are built by string concatenation with the bitmap computed by hand,
framed with a 2-byte big-endian header (``struct``), and answers are parsed
by walking the bitmap with the field formats the document gives.  Tests use
it as a second opinion: if our codec and this client agree, the document,
the codec and the wire agree -- a bug shared by our encoder and decoder
cannot hide behind a round trip.

Every socket operation relies on the socket's timeout, which the caller
sets (``sock.settimeout``); every loop is bounded.
"""
from __future__ import annotations

import struct

TEST_PAN = "4761739001010010"  # public Visa test card number (interface doc, section 10)

# Field formats from the document's tables (sections 5.1-5.4):
# ("fixed", n) exactly n characters; ("LL", n) / ("LLL", n) variable, at most n.
FIELD_FORMATS = {
    2: ("LL", 19), 3: ("fixed", 6), 4: ("fixed", 12), 7: ("fixed", 10), 11: ("fixed", 6),
    12: ("fixed", 6), 13: ("fixed", 4), 15: ("fixed", 4), 18: ("fixed", 4), 32: ("LL", 11),
    33: ("LL", 11), 35: ("LL", 37), 37: ("fixed", 12), 38: ("fixed", 6), 39: ("fixed", 2),
    41: ("fixed", 8), 42: ("fixed", 15), 43: ("fixed", 40), 48: ("LLL", 999), 49: ("fixed", 3),
    52: ("fixed", 16), 70: ("fixed", 3), 90: ("fixed", 42), 102: ("LL", 28),
}

HEADER = struct.Struct(">H")  # binary2: 2-byte big-endian length, header not counted
MAX_FRAME = 4096
MAX_FRAMES_PER_ANSWER = 20


class ProtocolError(Exception):
    """The peer's bytes do not follow the document."""


def _bitmap_hex(bits: set[int], first: int) -> str:
    value = 0
    for number in bits:
        if first <= number < first + 64:
            value |= 1 << (63 - (number - first))
    return f"{value:016X}"


def build_message(mti: str, fields: dict[int, str]) -> bytes:
    """MTI, primary bitmap, secondary bitmap if any field 65-128, fields ascending."""
    numbers = set(fields)
    if any(n > 64 for n in numbers):
        numbers.add(1)  # bit 1: a secondary bitmap follows
    out = mti.encode("ascii") + _bitmap_hex(numbers, 1).encode("ascii")
    if 1 in numbers:
        out += _bitmap_hex(numbers, 65).encode("ascii")
    for number in sorted(fields):
        kind, length = FIELD_FORMATS[number]
        value = fields[number].encode("utf-8")
        if kind == "fixed":
            if len(value) != length:
                raise ValueError(f"F{number} must be {length} characters, not {len(value)}")
            out += value
        else:
            if len(value) > length:
                raise ValueError(f"F{number} longer than {length}")
            width = 2 if kind == "LL" else 3
            out += f"{len(value):0{width}d}".encode("ascii") + value
    return out


def parse_message(payload: bytes) -> dict[str, str]:
    """``{"mti": ..., "<field>": value}`` by walking the bitmaps."""
    if len(payload) < 20:
        raise ProtocolError("shorter than MTI + primary bitmap")
    result = {"mti": payload[:4].decode("ascii")}
    primary = int(payload[4:20], 16)
    present = [n for n in range(1, 65) if primary & (1 << (64 - n))]
    pos = 20
    if 1 in present:
        secondary = int(payload[20:36], 16)
        present += [n for n in range(65, 129) if secondary & (1 << (128 - n))]
        pos = 36
    for number in present:
        if number == 1:
            continue
        if number not in FIELD_FORMATS:
            raise ProtocolError(f"F{number} is not in the document")
        kind, length = FIELD_FORMATS[number]
        if kind != "fixed":
            width = 2 if kind == "LL" else 3
            length_text = payload[pos : pos + width]
            if len(length_text) != width or not length_text.isdigit():
                raise ProtocolError(f"F{number} length prefix {length_text!r}")
            pos += width
            length = int(length_text)
        value = payload[pos : pos + length]
        if len(value) != length:
            raise ProtocolError(f"F{number} truncated")
        result[str(number)] = value.decode("utf-8")
        pos += length
    if pos != len(payload):
        raise ProtocolError(f"{len(payload) - pos} bytes after the last field")
    return result


def split_tags(value: str) -> list[tuple[str, str]]:
    """F48: 2-character tag, 3-digit length in bytes, UTF-8 value, repeated."""
    raw = value.encode("utf-8")
    tags = []
    pos = 0
    while pos < len(raw):  # bounded: pos advances by at least 5 each time
        tag = raw[pos : pos + 2].decode("ascii")
        length = int(raw[pos + 2 : pos + 5])
        tags.append((tag, raw[pos + 5 : pos + 5 + length].decode("utf-8")))
        pos += 5 + length
    return tags


def with_tags(message: dict[str, str]) -> dict[str, str]:
    """Add ``48.<TAG>`` entries (``48.BD``, ``48.BD.2``, ... for repeats)."""
    out = dict(message)
    seen: dict[str, int] = {}
    for tag, value in split_tags(message.get("48", "")):
        seen[tag] = seen.get(tag, 0) + 1
        out[f"48.{tag}" if seen[tag] == 1 else f"48.{tag}.{seen[tag]}"] = value
    return out


def tlv(items: list[tuple[str, str]]) -> str:
    return "".join(f"{tag}{len(value.encode('utf-8')):03d}{value}" for tag, value in items if value)


def build_sign_on(*, stan: str = "000001", transmission_datetime: str = "0203140509",
                  acquirer_id: str = "123456") -> bytes:
    return build_message("0800", {7: transmission_datetime, 11: stan, 32: acquirer_id, 70: "001"})


def build_payment(*, stan: str, amount_minor: int, biller: str, service: str, billing_number: str,
                  msisdn: str | None = None, language: str = "en", bill_number: str | None = None,
                  inquiry_reference: str | None = None, transmission_datetime: str = "0203140509",
                  pan: str = TEST_PAN, acquirer_id: str = "123456", terminal_id: str = "ATM00001",
                  rrn: str | None = None, currency: str = "400") -> bytes:
    """A 0200 bill payment (F3 500000), field by field from section 5.3."""
    f7 = transmission_datetime
    bill_data = tlv([("BC", biller), ("SC", service), ("BN", billing_number), ("BL", bill_number or ""),
                     ("MS", msisdn or ""), ("LG", language), ("IR", inquiry_reference or "")])
    return build_message("0200", {
        2: pan, 3: "500000", 4: f"{amount_minor:012d}", 7: f7, 11: stan, 12: f7[4:], 13: f7[:4],
        18: "6011", 32: acquirer_id, 37: rrn or (f7[4:] + stan), 41: terminal_id, 48: bill_data,
        49: currency,
    })


def send_frame(sock, payload: bytes) -> None:
    sock.sendall(HEADER.pack(len(payload)) + payload)


def _recv_exactly(sock, size: int) -> bytes:
    data = b""
    for _ in range(size + 1):  # each recv returns at least one byte or ends the loop
        if len(data) == size:
            return data
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProtocolError("connection closed")
        data += chunk
    return data


def recv_frame(sock) -> bytes:
    (length,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if not 0 < length <= MAX_FRAME:
        raise ProtocolError(f"frame length {length}")
    return _recv_exactly(sock, length)


def _exchange(sock, payload: bytes) -> dict[str, str]:
    """Send, then read until the answer with the request's F11 and F7."""
    request = parse_message(payload)
    send_frame(sock, payload)
    for _ in range(MAX_FRAMES_PER_ANSWER):
        answer = parse_message(recv_frame(sock))
        if answer.get("11") == request["11"] and answer.get("7") == request["7"]:
            return with_tags(answer)
    raise ProtocolError("no matching answer")


def sign_on(sock, **kwargs) -> dict[str, str]:
    """0800 sign-on; returns the 0810 as field number -> value."""
    return _exchange(sock, build_sign_on(**kwargs))


def pay(sock, *, stan: str, amount_minor: int, biller: str, service: str, billing_number: str,
        msisdn: str | None, language: str, **kwargs) -> dict[str, str]:
    """0200 payment; returns the 0210 as field number -> value, F48 split into ``48.<TAG>``."""
    payload = build_payment(stan=stan, amount_minor=amount_minor, biller=biller, service=service,
                            billing_number=billing_number, msisdn=msisdn, language=language, **kwargs)
    return _exchange(sock, payload)
