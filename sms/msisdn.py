"""MSISDN normalisation to E.164, and the destination TON/NPI it implies.

Numbers arrive as the switch typed them: international without ``+``
(``962791234567``), national (``0791234567``) or nonsense (``000000``).  The
``phonenumbers`` library (Google's libphonenumber metadata) decides, given
the deployment's country, which is which.

Digits typed on an Arabic keypad -- Arabic-Indic (``٠``-``٩``, U+0660) and
Eastern Arabic-Indic (``۰``-``۹``, U+06F0) -- are read as the digits they are
(:func:`ascii_digits`), so ``٠٧٩١٢٣٤٥٦٧`` is ``0791234567``.  Anything else
that is not an ASCII digit (full-width digits, letters, spaces) makes the
number invalid: ``str.isdigit()`` accepts many such characters, which
smpplib cannot encode -- such a number must fail on its own, never the
SMPP session.  What reaches the wire is always ASCII E.164 digits.

Pure functions, no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

TON_INTERNATIONAL = 1
NPI_E164 = 1
_ASCII_NUMBER = re.compile(r"\+?[0-9]{3,20}")


class InvalidMsisdn(ValueError):
    """Not a valid mobile number for the configured country.  The message
    never repeats the number (logs must not carry MSISDNs)."""


@dataclass(frozen=True)
class Destination:
    address: str  # E.164 digits without the "+", as destination_addr carries them
    ton: int
    npi: int


_ARABIC_DIGITS = str.maketrans({**{chr(0x0660 + i): str(i) for i in range(10)},
                                **{chr(0x06F0 + i): str(i) for i in range(10)}})


def ascii_digits(raw: str) -> str:
    """Arabic-Indic and Eastern Arabic-Indic digits as ASCII; nothing else changes."""
    return raw.translate(_ARABIC_DIGITS)


def normalise_msisdn(raw: str, country: str = "JO") -> Destination:
    """``raw`` → its E.164 form; raises :class:`InvalidMsisdn`.

    ``country`` (ISO 3166 alpha-2) resolves national numbers; a number that
    already starts with a country code (with or without ``+``) keeps it.
    """
    text = ascii_digits((raw or "").strip())
    if not _ASCII_NUMBER.fullmatch(text):
        raise InvalidMsisdn("MSISDN is not 3..20 ASCII digits")
    candidates = [text] if text.startswith("+") else [text, "+" + text]
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, country)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            return Destination(e164[1:], TON_INTERNATIONAL, NPI_E164)
    raise InvalidMsisdn(f"MSISDN is not a valid number (country {country})")
