"""Card-data masking shared by the codec, the journal and the log processor.

PCI rule of thumb the gateway follows everywhere: a PAN is shown at most as
its first 6 and last 4 digits; track data and PIN blocks are never shown.
"""
from __future__ import annotations

import re

# 13 to 19 digits not touching other digits: the shape of a PAN.  Track-2
# data ("PAN=YYMM...") is matched as a whole and removed, not masked.
_TRACK2 = re.compile(r";?(?<!\d)\d{13,19}=\d{4,}[0-9?]*")
_PAN = re.compile(r"(?<!\d)(\d{6})(\d{3,9})(\d{4})(?!\d)")


def mask_pan(pan: str | None) -> str | None:
    """``4761739001010010`` -> ``476173******0010`` (short values fully masked)."""
    if pan is None:
        return None
    pan = pan.strip()
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def mask_text(text: str) -> str:
    """Mask every PAN-shaped run of digits in free text and drop track data."""
    text = _TRACK2.sub("[TRACK2 REMOVED]", text)
    return _PAN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)
