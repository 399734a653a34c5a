"""Receipt and reversal-notice texts: pure functions, no I/O.

The gateway renders the SMS text when it commits a confirmed payment and stores
the *text* in the outbox, so what the subscriber receives is fixed at the
moment the payment is confirmed (a later change of templates or biller names
does not rewrite old receipts).

Templates are ``str.format`` strings keyed by language (``"ar"``), or by
biller and language (``"TEL/ar"``).  The one used for a receipt is the first
of: the biller's template in the subscriber's language, the language's, the
biller's English one, the English one (:func:`pick_template`).  Deployments
override them in ``conf/``; :func:`validate_templates` is called at start-up
so that a typo in a placeholder stops the gateway at once instead of failing
on the first paying customer.

The default receipts fit one SMS part where the language allows: English
and Greek (capitals, folded to GSM-7 by
:func:`~billgw.sms.encoding.fold_to_gsm7`) in 160 GSM-7 characters, Arabic
in 70 UCS-2 characters for a biller name of about 13 letters (the Arabic
default leaves the date out: the handset stamps the SMS on arrival).  The
32-character payment id is shown as its **short reference**
(:func:`short_reference`, 10 characters), which ``billgw sms ref`` looks up.

Amounts are integers in minor units and are formatted with integer
arithmetic: a float would turn 12.345 JOD into 12.344999... .
"""
from __future__ import annotations

import datetime as _dt
import string
from dataclasses import dataclass
from typing import Mapping

from billgw.sms.encoding import fold_to_gsm7

FALLBACK_LANGUAGE = "en"


@dataclass(frozen=True)
class ReceiptData:
    """What a receipt may say about a confirmed payment.

    ``masked_pan`` is already masked (first 6 + last 4 at most); the SMS shows
    only its last four digits.
    """

    biller_name_en: str
    biller_name_ar: str
    billing_number: str
    bill_number: str | None
    amount: int
    currency: str
    exponent: int
    currency_code: str
    fee: int
    paid_at: _dt.datetime  # naive, the gateway's local wall-clock time (gateway/receipts.py)
    receipt_number: str
    reference: str
    masked_pan: str
    surcharge: int = 0  # late-payment surcharge included in ``amount``
    biller_code: str = ""


# The surcharge sentence, only when there is one (a zero adds no
# characters, so it never costs an SMS part).
SURCHARGE_LINES = {
    "en": " Incl. late surcharge {surcharge} {currency_code}.",
    "ar": " يشمل غرامة تأخير {surcharge} {currency_code}.",
    "el": " ΜΕ ΠΡΟΣΑΥΞΗΣΗ {surcharge} {currency_code}.",
}


# Placeholders a template may use, with what they contain.
PLACEHOLDERS = {
    "biller_name": "biller name in the message language (English if none)",
    "biller_name_en": "biller name in English",
    "biller_name_ar": "biller name in Arabic",
    "billing_number": "subscriber's billing/account number",
    "bill_number": "bill number, or '-' when the payment is not for one bill",
    "amount": "bill amount with the currency's decimals, e.g. 12.500",
    "fee": "fee with the currency's decimals, e.g. 0.250",
    "total": "amount + fee with the currency's decimals",
    "currency_code": "ISO 4217 alphabetic code, e.g. JOD",
    "date": "payment date and time, YYYY-MM-DD HH:MM, the gateway's local time ([business_day] timezone)",
    "receipt_number": "the biller's receipt number",
    "reference": "the gateway's payment id (32 characters)",
    "short_reference": "the payment id's first 10 characters, upper case (billgw sms ref finds it)",
    "date_short": "payment date and time, DD/MM/YY HH:MM, the gateway's local time",
    "card": "the card as ****1234 (last four digits only)",
    "surcharge": "late-payment surcharge included in the amount, with the currency's decimals",
    "surcharge_line": "' Incl. late surcharge 0.263 JOD.' in the message language, empty when none",
}

SHORT_REFERENCE_LENGTH = 10

DEFAULT_TEMPLATES: dict[str, str] = {
    # 121 GSM-7 characters with a 13-letter biller name: one part.
    "en": (
        "Paid {amount} {currency_code} to {biller_name}, acct {billing_number}, bill {bill_number}, "
        "fee {fee}, {date_short}, card {card}. Ref {short_reference}"
    ),
    # 67 UCS-2 characters with a 13-letter biller name: one part.
    "ar": "دفع {amount} {currency_code} إلى {biller_name} {billing_number} رسوم {fee} مرجع {short_reference}",
    # Capitals: folded to GSM-7, 122 characters, one part.
    "el": (
        "ΠΛΗΡΩΜΗ {amount} {currency_code} ΣΕ {biller_name}, ΛΟΓ. {billing_number}, ΛΟΓ/ΣΜΟΣ {bill_number}, "
        "ΠΡΟΜ. {fee}, {date_short}, ΚΑΡΤΑ {card}. ΚΩΔ. {short_reference}"
    ),
}

DEFAULT_REVERSAL_TEMPLATES: dict[str, str] = {
    "en": (
        "Your payment of {amount} {currency_code} to {biller_name}, acct {billing_number}, "
        "on {date_short} (card {card}) was reversed. Ref {short_reference}"
    ),
    "ar": "أعيدت دفعتك {amount} {currency_code} إلى {biller_name} {billing_number} مرجع {short_reference}",
    "el": (
        "Η ΠΛΗΡΩΜΗ {amount} {currency_code} ΣΕ {biller_name}, ΛΟΓ. {billing_number}, {date_short} "
        "(ΚΑΡΤΑ {card}) ΑΚΥΡΩΘΗΚΕ. ΚΩΔ. {short_reference}"
    ),
}


def short_reference(reference: str) -> str:
    """The payment id as a subscriber can read it out: its first 10
    characters, upper case (``"3f9a1c07b2..."`` -> ``"3F9A1C07B2"``).

    40 bits of a random id: at 3 million payments a month a handful share
    one, and the SMS's date, amount and account tell them apart;
    ``billgw sms ref`` lists every payment that starts with it.
    """
    return (reference or "")[:SHORT_REFERENCE_LENGTH].upper()


def format_minor_units(minor: int, exponent: int) -> str:
    """``12500, 3 -> "12.500"`` using integers only (no float rounding)."""
    if exponent < 0:
        raise ValueError(f"negative currency exponent {exponent}")
    sign = "-" if minor < 0 else ""
    if exponent == 0:
        return f"{sign}{abs(minor)}"
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"


def last_four(masked_pan: str) -> str:
    """``"476173******0010" -> "****0010"``: an SMS is not a secure channel."""
    digits = "".join(ch for ch in masked_pan if ch.isdigit())
    return "****" + digits[-4:] if len(digits) >= 4 else "****"


def normalise_language(language: str) -> str:
    """``"AR"``, ``"ar-JO"`` and ``"ar_JO"`` all mean the template ``"ar"``."""
    return (language or "").strip().lower().replace("_", "-").split("-")[0]


def _values(language: str, receipt: ReceiptData) -> dict[str, str]:
    lang = normalise_language(language)
    biller = receipt.biller_name_ar if lang == "ar" and receipt.biller_name_ar else receipt.biller_name_en
    return {
        "biller_name": biller,
        "biller_name_en": receipt.biller_name_en,
        "biller_name_ar": receipt.biller_name_ar,
        "billing_number": receipt.billing_number,
        "bill_number": receipt.bill_number or "-",
        "amount": format_minor_units(receipt.amount, receipt.exponent),
        "fee": format_minor_units(receipt.fee, receipt.exponent),
        "total": format_minor_units(receipt.amount + receipt.fee, receipt.exponent),
        "currency_code": receipt.currency_code,
        "date": receipt.paid_at.strftime("%Y-%m-%d %H:%M"),
        "receipt_number": receipt.receipt_number,
        "reference": receipt.reference,
        "short_reference": short_reference(receipt.reference),
        "date_short": receipt.paid_at.strftime("%d/%m/%y %H:%M"),
        "card": last_four(receipt.masked_pan),
        "surcharge": format_minor_units(receipt.surcharge, receipt.exponent),
        "surcharge_line": (SURCHARGE_LINES.get(lang, SURCHARGE_LINES["en"]).format(
            surcharge=format_minor_units(receipt.surcharge, receipt.exponent), currency_code=receipt.currency_code)
            if receipt.surcharge else ""),
    }


def pick_template(language: str, templates: Mapping[str, str], biller_code: str = "") -> tuple[str, str, str]:
    """``(key used, language used, template)``: the biller's template in
    ``language``, the language's, the biller's English one, the English one.
    The biller name follows the language of the template used, not the one
    asked for, when we fall back."""
    lang = normalise_language(language)
    candidates = []
    if biller_code:
        candidates.append((f"{biller_code}/{lang}", lang))
    candidates.append((lang, lang))
    if biller_code:
        candidates.append((f"{biller_code}/{FALLBACK_LANGUAGE}", FALLBACK_LANGUAGE))
    candidates.append((FALLBACK_LANGUAGE, FALLBACK_LANGUAGE))
    for key, used in candidates:
        if key in templates:
            return key, used, templates[key]
    raise KeyError(f"no {FALLBACK_LANGUAGE!r} SMS template")


def _render(language: str, receipt: ReceiptData, templates: Mapping[str, str]) -> str:
    _, lang, template = pick_template(language, templates, receipt.biller_code)
    return fold_to_gsm7(template.format_map(_values(lang, receipt)))


def render_receipt(
    language: str, receipt: ReceiptData, templates: Mapping[str, str] | None = None
) -> str:
    """The receipt text in ``language``; unknown languages get English."""
    return _render(language, receipt, templates or DEFAULT_TEMPLATES)


def render_reversal_notice(
    language: str, receipt: ReceiptData, templates: Mapping[str, str] | None = None
) -> str:
    """The text telling the subscriber that a receipted payment was reversed."""
    return _render(language, receipt, templates or DEFAULT_REVERSAL_TEMPLATES)


_SAMPLE = ReceiptData(
    biller_name_en="Sample Biller",
    biller_name_ar="مفوتر",
    billing_number="0790000000",
    bill_number="B1",
    amount=12500,
    currency="400",
    exponent=3,
    currency_code="JOD",
    fee=250,
    paid_at=_dt.datetime(2024, 1, 31, 23, 59),
    receipt_number="R1",
    reference="P1",
    masked_pan="476173******0010",
)


def validate_templates(templates: Mapping[str, str]) -> None:
    """Raise ValueError naming the language and the bad placeholder.

    Only plain placeholders from :data:`PLACEHOLDERS` are allowed: attribute
    or index access (``{amount.__class__}``) and positional ``{}`` are
    refused, and each template is rendered once with sample data so that a
    bad format spec also fails here rather than at the first payment.
    """
    if FALLBACK_LANGUAGE not in templates:
        raise ValueError(f"SMS templates: no {FALLBACK_LANGUAGE!r} template to fall back on")
    for key, template in templates.items():
        biller, _, language = key.rpartition("/")
        if "/" in key and (not biller or not language):
            raise ValueError(f"SMS template {key!r}: keys are LANGUAGE or BILLER/LANGUAGE")
        language = key  # named as given in the messages below
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise ValueError(f"SMS template {language!r}: malformed: {e}") from None
        for field in fields:
            if field not in PLACEHOLDERS:
                raise ValueError(
                    f"SMS template {language!r}: unknown placeholder {{{field}}}; "
                    f"known: {', '.join(sorted(PLACEHOLDERS))}"
                )
        try:
            template.format_map(_values(key.rpartition("/")[2], _SAMPLE))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(f"SMS template {language!r}: cannot render: {e}") from None

# Sample data of previews (billgw sms preview) and of validate_templates.
SAMPLE_RECEIPT = _SAMPLE
