"""Receipt and reversal-notice texts: pure functions, no I/O.

The gateway renders the SMS text when it commits a confirmed payment and stores
the *text* in the outbox, so what the subscriber receives is fixed at the
moment the payment is confirmed (a later change of templates or biller names
does not rewrite old receipts).

Templates are ``str.format`` strings keyed by language.  Deployments override
them in ``conf/``; :func:`validate_templates` is called at start-up so that a
typo in a placeholder stops the gateway at once instead of failing on the
first paying customer.

Amounts are integers in minor units and are formatted with integer
arithmetic: a float would turn 12.345 JOD into 12.344999... .
"""
from __future__ import annotations

import datetime as _dt
import string
from dataclasses import dataclass
from typing import Mapping

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
    paid_at: _dt.datetime
    receipt_number: str
    reference: str
    masked_pan: str
    surcharge: int = 0  # late-payment surcharge included in ``amount``


# The surcharge sentence, only when there is one (a zero adds no
# characters, so it never costs an SMS part).
SURCHARGE_LINES = {
    "en": " Incl. late surcharge {surcharge} {currency_code}.",
    "ar": " يشمل غرامة تأخير {surcharge} {currency_code}.",
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
    "date": "payment date and time, YYYY-MM-DD HH:MM",
    "receipt_number": "the biller's receipt number",
    "reference": "the gateway's payment id",
    "card": "the card as ****1234 (last four digits only)",
    "surcharge": "late-payment surcharge included in the amount, with the currency's decimals",
    "surcharge_line": "' Incl. late surcharge 0.263 JOD.' in the message language, empty when none",
}

DEFAULT_TEMPLATES: dict[str, str] = {
    "en": (
        "Paid {amount} {currency_code} to {biller_name}, account {billing_number}, "
        "bill {bill_number}. Fee {fee} {currency_code}. {date}, card {card}. "
        "Receipt {receipt_number}, ref {reference}."
    ),
    "ar": (
        "تم دفع {amount} {currency_code} إلى {biller_name}، رقم الاشتراك {billing_number}، "
        "الفاتورة {bill_number}. العمولة {fee} {currency_code}. {date}، البطاقة {card}. "
        "رقم الإيصال {receipt_number}، المرجع {reference}."
    ),
}

DEFAULT_REVERSAL_TEMPLATES: dict[str, str] = {
    "en": (
        "Your payment of {amount} {currency_code} to {biller_name}, account "
        "{billing_number}, on {date} (card {card}) was reversed. Ref {reference}."
    ),
    "ar": (
        "تم عكس دفعتك بمبلغ {amount} {currency_code} إلى {biller_name}، رقم الاشتراك "
        "{billing_number}، بتاريخ {date} (البطاقة {card}). المرجع {reference}."
    ),
}


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
        "card": last_four(receipt.masked_pan),
        "surcharge": format_minor_units(receipt.surcharge, receipt.exponent),
        "surcharge_line": (SURCHARGE_LINES.get(lang, SURCHARGE_LINES["en"]).format(
            surcharge=format_minor_units(receipt.surcharge, receipt.exponent), currency_code=receipt.currency_code)
            if receipt.surcharge else ""),
    }


def _pick(language: str, templates: Mapping[str, str]) -> tuple[str, str]:
    """(language actually used, template): the biller name must follow the
    template's language, not the requested one, when we fall back."""
    lang = normalise_language(language)
    if lang in templates:
        return lang, templates[lang]
    return FALLBACK_LANGUAGE, templates[FALLBACK_LANGUAGE]


def render_receipt(
    language: str, receipt: ReceiptData, templates: Mapping[str, str] | None = None
) -> str:
    """The receipt text in ``language``; unknown languages get English."""
    lang, template = _pick(language, templates or DEFAULT_TEMPLATES)
    return template.format_map(_values(lang, receipt))


def render_reversal_notice(
    language: str, receipt: ReceiptData, templates: Mapping[str, str] | None = None
) -> str:
    """The text telling the subscriber that a receipted payment was reversed."""
    lang, template = _pick(language, templates or DEFAULT_REVERSAL_TEMPLATES)
    return template.format_map(_values(lang, receipt))


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
    for language, template in templates.items():
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
            template.format_map(_values(language, _SAMPLE))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(f"SMS template {language!r}: cannot render: {e}") from None
