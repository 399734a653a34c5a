"""Card-data masking shared by the codec, the journal and the log processor.

PCI rule of thumb the gateway follows everywhere: a PAN is shown at most as
its first 6 and last 4 digits; track data and PIN blocks are never shown.

What counts as a PAN in free text: a Luhn-valid run of 13 to 19 digits --
written as one run, in groups separated by spaces or dashes (``4761 7390
0101 0010``, ``3782-822463-10005``), zero-padded to a longer run
(``00004761739001010010``), or behind a short length prefix (``16`` +
PAN, as ISO 8583 LLVARs and F48 TLVs put it).  The Luhn check is what keeps
our own ids readable: a digit run inside a payment reference is not a card
number, and 32-character hexadecimal tokens (payment references, inquiry
references) are never touched, so a reference a customer quotes can always
be found in the log.  Track 1 (``%B<PAN>^NAME^YYMM...?``) and track 2
(``;<PAN>=YYMM...?``, ``D`` as separator too) are removed whole: expiry,
service code, name and discretionary data go with the PAN.

Everything here is pure and imports nothing of the gateway.
"""
from __future__ import annotations

import hashlib
import hmac
import re

TRACK1_REMOVED = "[TRACK1 REMOVED]"
TRACK2_REMOVED = "[TRACK2 REMOVED]"

# Track 1: optional start sentinel, format code B, PAN, ^, name (up to 26),
# ^, expiry/service code/discretionary data, optional end sentinel.
_TRACK1 = r"%?B?(?<![0-9])[0-9]{12,19}\^[^^\r\n]{0,26}\^[^?\s]*\??"
# Track 2: optional start sentinel, PAN, '=' or 'D' separator, then at least
# the expiry, whatever digits (and 'F' padding) follow, optional end sentinel.
_TRACK2 = r";?(?<![0-9])[0-9]{12,19}[=D][0-9]{4}[0-9F]*\??"

# One alternation, scanned left to right: our 32-hex ids first (kept whole,
# so nothing inside one is ever looked at), then tracks (removed), then
# grouped card numbers, then plain digit runs (masked when a PAN is there).
_CANDIDATES = re.compile(
    r"(?P<hexid>(?<![0-9A-Za-z])(?=[0-9a-f]*[a-f])[0-9a-f]{32}(?![0-9A-Za-z]))"
    rf"|(?P<track1>{_TRACK1})"
    rf"|(?P<track2>{_TRACK2})"
    r"|(?P<grouped>(?<![0-9])(?:[0-9]{4}(?P<s1>[ -])[0-9]{4}(?P=s1)[0-9]{4}(?P=s1)[0-9]{1,7}"
    r"|[0-9]{4}(?P<s2>[ -])[0-9]{6}(?P=s2)[0-9]{4,5})(?![0-9]))"
    r"|(?P<run>(?<![0-9])[0-9]{13,}(?![0-9]))"
)

_TRACKS = re.compile(rf"(?P<t1>{_TRACK1})|(?P<t2>{_TRACK2})")

_MIN, _MAX = 13, 19
# An LLVAR, an LLLVAR or an F48 TLV length can sit right before a PAN.
_MAX_PREFIX = 3


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def looks_like_pan(digits: str) -> bool:
    """13 to 19 digits, not starting with 0 (no issuer number does), Luhn-valid."""
    return _MIN <= len(digits) <= _MAX and digits[0] != "0" and luhn_ok(digits)


def _pan_span(digits: str) -> tuple[int, int] | None:
    """Where a card number sits in a digit run, or None: the run itself,
    the run behind a length prefix of up to 3 digits, or the run behind
    its zero padding.  A longer run (F90's 42 digits) is no card number.
    """
    n = len(digits)
    for start in range(0, _MAX_PREFIX + 1):
        if n - start < _MIN:
            break
        if looks_like_pan(digits[start:]):
            return start, n
    stripped = n - len(digits.lstrip("0"))
    if stripped > _MAX_PREFIX and looks_like_pan(digits[stripped:]):
        return stripped, n
    return None


def _mask_digits(digits: str, span: tuple[int, int]) -> str:
    """The card number at ``span`` keeps its first 6 and last 4 digits;
    every other digit of the run (prefix, padding) is starred too."""
    start, end = span
    pan = digits[start:end]
    return "*" * start + pan[:6] + "*" * (len(pan) - 10) + pan[-4:] + "*" * (len(digits) - end)


def _replace(match: re.Match) -> str:
    text = match.group(0)
    if match.group("hexid"):
        return text
    if match.group("track1"):
        return TRACK1_REMOVED
    if match.group("track2"):
        return TRACK2_REMOVED
    digits = re.sub(r"[ -]", "", text)
    span = _pan_span(digits)
    if span is None:
        return text
    return _mask_digits(digits, span)


def mask_pan(pan: str | None) -> str | None:
    """``4761739001010010`` -> ``476173******0010`` (short values fully masked)."""
    if pan is None:
        return None
    pan = pan.strip()
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def remove_tracks(text: str) -> str:
    """Track 1 and track 2 data removed whole (PAN, name, expiry, the rest)."""
    return _TRACKS.sub(lambda m: TRACK1_REMOVED if m.group("t1") else TRACK2_REMOVED, text)


def mask_text(text: str) -> str:
    """Mask every card number in free text and drop track data.

    Digit runs that are not Luhn-valid card numbers (amounts, STANs, phone
    numbers, the digits inside our hexadecimal references) are left as
    they are.
    """
    if not text:
        return text
    return _CANDIDATES.sub(_replace, text)


def contains_card_data(text: str) -> bool:
    """True when :func:`mask_text` would change ``text`` (used to decide
    whether a value may be stored as it is)."""
    return mask_text(text) != text


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str) -> str:
    """Terminal control characters shown, not obeyed: ANSI escape sequences
    (ESC, CSI), other C0/C1 controls and bidirectional overrides become
    ``\\x1b``-style escapes, so a terminal id or a biller's text printed for
    an operator cannot move the cursor, recolour, retitle or reorder the
    operator's terminal.  Tabs and newlines are escaped too (one finding,
    one line), except that callers joining lines add their own."""
    def esc(match: re.Match) -> str:
        code = ord(match.group(0))
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(esc, text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))


class PanHasher:
    """A keyed hash of a PAN (HMAC-SHA-256, hexadecimal), kept beside the
    masked PAN so an operator can find a card's payments without anyone
    storing the card number.  Without the key the hash cannot be computed
    from a guessed PAN, which a plain hash of a 16-digit number could be.
    The PAN is hashed as its digits only (spaces and dashes dropped), so
    ``4761 7390 0101 0010`` and ``4761739001010010`` hash alike."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("a PAN hash needs a key")
        self._key = key

    def __repr__(self) -> str:  # never the key
        return "PanHasher(<key>)"

    def __call__(self, pan: str | None) -> str | None:
        if not pan:
            return None
        digits = "".join(ch for ch in pan if ch.isascii() and ch.isdigit())
        if not digits:
            return None
        return hmac.new(self._key, digits.encode("ascii"), hashlib.sha256).hexdigest()
