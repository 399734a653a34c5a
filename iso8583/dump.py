"""Human-readable views of ISO 8583 payloads: hex dumps and field annotations.

Two audiences read these: the bank engineer integrating against the gateway
(the interface document's examples are generated with them, so they show the
exact bytes our codec produces) and the operator reading the gateway's logs.
Both must never see card data, so :func:`annotate` masks the PAN to its first
6 and last 4 digits and shows track 2 (F35) and the PIN block (F52) only as
removed, and :func:`redact` blanks those bytes in place (same length, so the
offsets in a dump of the redacted payload still match the wire).

:func:`hex_dump` itself is a pure formatter: it shows exactly the bytes it is
given, so callers logging untrusted traffic dump ``redact(payload)`` -- or
call :func:`safe_hex_dump`, which does that.  Everything here is pure; no I/O.
"""
from __future__ import annotations

import re

import iso8583 as _pyiso8583  # pyiso8583, not this package (see setup.py)

from .bill_data import TAG_DESCRIPTIONS, BillDataError, decode_tlv
from .masking import mask_pan, mask_text
from .messages import MessageFormatError, describe_fields
from .spec import CARD_DATA_FIELDS, SPEC

MTI_NAMES = {
    "0800": "network management request",
    "0810": "network management response",
    "0200": "financial transaction request",
    "0210": "financial transaction response",
    "0220": "financial transaction advice",
    "0221": "financial transaction advice repeat",
    "0230": "financial transaction advice response",
    "0420": "reversal advice",
    "0421": "reversal advice repeat",
    "0430": "reversal advice response",
}

_BYTES_PER_LINE = 16


def hex_dump(payload: bytes) -> str:
    """Format ``payload`` like ``hexdump -C``: offset, 16 hex bytes, ASCII.

    Unlike ``hexdump -C`` repeated lines are never folded into ``*``, so every
    byte can be read back from the text (the interface-document test does).
    The last line is the total length, as ``hexdump -C`` prints it.
    """
    lines = []
    for offset in range(0, len(payload), _BYTES_PER_LINE):
        chunk = payload[offset : offset + _BYTES_PER_LINE]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        hex_part = f"{left:<23}  {right:<23}"
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {hex_part}  |{text}|")
    lines.append(f"{len(payload):08x}")
    return "\n".join(lines)


def parse_hex_dump(text: str) -> bytes:
    """Read bytes back from :func:`hex_dump` output (offsets are checked).

    Kept next to the formatter so the two stay in step; the interface
    document's test uses it to prove every dump in the document decodes.
    """
    out = bytearray()
    line_re = re.compile(r"^([0-9a-f]{8})  (.{48})  \|")
    for line in text.splitlines():
        if not line.strip():
            continue
        match = line_re.match(line)
        if match is None:
            if re.fullmatch(r"[0-9a-f]{8}", line.strip()) and int(line.strip(), 16) == len(out):
                continue
            raise ValueError(f"not a hex dump line: {line!r}")
        if int(match.group(1), 16) != len(out):
            raise ValueError(f"offset {match.group(1)} does not follow byte {len(out)}")
        out += bytes.fromhex(match.group(2))
    return bytes(out)


def _wire_layout(payload: bytes) -> list[tuple[str, int, bytes]]:
    """(field, offset, length prefix) per field in wire order, from pyiso8583."""
    _, encoded = _pyiso8583.decode(bytes(payload), SPEC)
    layout = []
    offset = 0
    for key, parts in encoded.items():
        layout.append((key, offset, parts["len"]))
        offset += len(parts["len"]) + len(parts["data"])
    return layout


def redact(payload: bytes) -> bytes:
    """``payload`` with card data blanked in place, same length.

    The PAN keeps its first 6 and last 4 digits; every other cardholder-data
    field (track 2, PIN block, ...) becomes ``*``.  A payload that does not
    decode has every PAN-shaped digit run masked instead, and track-2-shaped
    runs starred out entirely: a malformed frame is exactly what gets logged.
    """
    try:
        layout = _wire_layout(payload)
    except Exception:  # undecodable: fall back to pattern masking, never raise
        return _redact_by_pattern(payload)
    out = bytearray(payload)
    for key, offset, prefix in layout:
        if key not in CARD_DATA_FIELDS:
            continue
        start = offset + len(prefix)
        length = int(prefix) if prefix else SPEC[key]["max_len"]
        value = bytes(out[start : start + length])
        if key == "2":
            masked = (mask_pan(value.decode("ascii", "replace")) or "").encode("ascii", "replace")
            replacement = masked if len(masked) == length else b"*" * length
        else:
            replacement = b"*" * length
        out[start : start + length] = replacement
    return bytes(out)


_TRACK2_BYTES = re.compile(rb"(?<!\d)\d{13,19}=\d*")
_PAN_BYTES = re.compile(rb"(?<!\d)(\d{6})(\d{3,9})(\d{4})(?!\d)")


def _redact_by_pattern(payload: bytes) -> bytes:
    out = _TRACK2_BYTES.sub(lambda m: b"*" * len(m.group(0)), bytes(payload))
    return _PAN_BYTES.sub(lambda m: m.group(1) + b"*" * len(m.group(2)) + m.group(3), out)


def safe_hex_dump(payload: bytes) -> str:
    """:func:`hex_dump` of :func:`redact` -- what a log may show."""
    return hex_dump(redact(payload))


def _bitmap_fields(bitmap: str, first: int) -> list[int]:
    bits = int(bitmap, 16)
    return [first + i for i in range(64) if bits & (1 << (63 - i))]


def annotate(payload: bytes) -> str:
    """One line per field: offset, field number, name, value (card data masked).

    F48 is broken into its tags with their meaning.  A payload that does not
    decode yields a one-line explanation (already free of card data) rather
    than an exception, so a log line can always be written.
    """
    try:
        values = describe_fields(payload)
        layout = _wire_layout(payload)
    except MessageFormatError as exc:
        return f"undecodable message: {exc}"
    except Exception as exc:  # describe_fields decoded it; layout should too
        return f"undecodable message: {type(exc).__name__}"
    rows = [f"{'off':<4}  {'fld':<4} {'name':<44} value ([length prefix] value)"]
    for key, offset, prefix in layout:
        if key == "t":
            value = values["t"]
            name = SPEC["t"]["desc"]
            shown = f"{value} ({MTI_NAMES.get(value, 'not used by this interface')})"
            number = "MTI"
        elif key in ("p", "1"):
            raw = _pyiso8583.decode(bytes(payload), SPEC)[0][key]
            first = 1 if key == "p" else 65
            present = ", ".join(str(f) for f in _bitmap_fields(raw, first))
            name = SPEC[key]["desc"]
            shown = f"{raw} (bits set: {present})"
            number = "BMP" if key == "p" else "BM2"
        else:
            name = SPEC[key]["desc"]
            number = f"F{int(key)}"
            value = values.get(key, "")
            if key == "2":
                shown = value
            elif key in CARD_DATA_FIELDS:
                shown = "[removed: card data is never shown]"
            elif key == "48":
                # Shown tag by tag below; masking the concatenated TLV would
                # see PAN-shaped runs where a length meets a billing number.
                shown = "bill data TLV, tags below"
            else:
                shown = mask_text(value)
            if prefix:
                shown = f"[{prefix.decode('ascii', 'replace')}] {shown}"
        rows.append(f"{offset:04x}  {number:<4} {name:<44} {shown}")
        if key == "48":
            rows.extend(_annotate_tlv(values.get("48", "")))
        elif key == "90":
            rows.extend(_annotate_original_data(values.get("90", "")))
    return "\n".join(rows)


def _annotate_original_data(value: str) -> list[str]:
    """F90 split into its five parts, as sent (IDs still zero-filled), so a
    reader can check each against the original message."""
    parts = (("MTI", 4, "original message type"), ("STAN", 6, "original F11"),
             ("F7", 10, "original transmission date and time"),
             ("ACQ", 11, "original acquirer ID (F32), zero-filled"),
             ("FWD", 11, "original forwarder ID (F33), zero-filled; zeros = none"))
    if len(value) != sum(length for _, length, _ in parts):
        return [f"{'':10}(not 42 characters: cannot be split)"]
    rows = []
    offset = 0
    for label, length, meaning in parts:
        rows.append(f"{'':10}{label:<4} {value[offset : offset + length]:<11}  ({meaning})")
        offset += length
    return rows


def _annotate_tlv(value: str) -> list[str]:
    try:
        items = decode_tlv(value)
    except BillDataError as exc:
        return [f"{'':10}(not valid TLV: {exc})"]
    rows = []
    for tag, tag_value in items:
        meaning = TAG_DESCRIPTIONS.get(tag, ("", "unknown tag (ignored)", ""))[1]
        length = len(tag_value.encode("utf-8"))
        rows.append(f"{'':10}{tag} {length:03d}  {mask_text(tag_value)}  ({meaning})")
    return rows
