"""Receipt texts: exact wording, integer amount formatting, card masking."""
import datetime as dt

import pytest

from billgw.sms.templates import (
    DEFAULT_REVERSAL_TEMPLATES,
    DEFAULT_TEMPLATES,
    ReceiptData,
    format_minor_units,
    render_receipt,
    render_reversal_notice,
    validate_templates,
)

RECEIPT = ReceiptData(
    biller_name_en="Orange Jordan",
    biller_name_ar="أورانج الأردن",
    billing_number="0791234567",
    bill_number="2024-01",
    amount=12500,
    currency="400",
    exponent=3,
    currency_code="JOD",
    fee=250,
    paid_at=dt.datetime(2024, 2, 3, 14, 5, 9),
    receipt_number="ORJ-778",
    reference="PAY-000042",
    masked_pan="476173******0010",
)


def test_english_receipt_exact_text():
    assert render_receipt("en", RECEIPT) == (
        "Paid 12.500 JOD to Orange Jordan, account 0791234567, bill 2024-01. "
        "Fee 0.250 JOD. 2024-02-03 14:05, card ****0010. Receipt ORJ-778, ref PAY-000042."
    )


def test_arabic_receipt_uses_arabic_biller_name_and_same_figures():
    text = render_receipt("ar", RECEIPT)
    assert text.startswith("تم دفع 12.500 JOD إلى أورانج الأردن،")
    assert "0.250" in text and "****0010" in text and "PAY-000042" in text
    assert "Orange" not in text


def test_language_tags_are_normalised_and_unknown_falls_back_to_english():
    assert render_receipt("AR-jo", RECEIPT) == render_receipt("ar", RECEIPT)
    assert render_receipt("fr", RECEIPT) == render_receipt("en", RECEIPT)
    assert render_receipt("", RECEIPT) == render_receipt("en", RECEIPT)


def test_no_more_than_last_four_card_digits_appear():
    for lang in ("en", "ar"):
        for render in (render_receipt, render_reversal_notice):
            text = render(lang, RECEIPT)
            assert "476173" not in text
            assert "****0010" in text


@pytest.mark.parametrize(
    "minor, exponent, expected",
    [
        (12500, 3, "12.500"),
        (5, 3, "0.005"),
        (1999, 2, "19.99"),
        (100, 0, "100"),
        (-250, 3, "-0.250"),
        # 2**53 + 1 is not representable as a float: integer arithmetic keeps it.
        (9007199254740993, 2, "90071992547409.93"),
    ],
)
def test_amounts_use_the_currency_exponent_with_integers(minor, exponent, expected):
    assert format_minor_units(minor, exponent) == expected


def test_syrian_pounds_have_two_decimals():
    syp = dict(RECEIPT.__dict__, amount=150000, fee=0, exponent=2, currency="760", currency_code="SYP", bill_number=None)
    text = render_receipt("en", ReceiptData(**syp))
    assert "Paid 1500.00 SYP" in text and "Fee 0.00 SYP" in text and "bill -." in text


def test_custom_templates_from_configuration_are_used():
    templates = {"en": "{biller_name}: {total} {currency_code} paid. Ref {reference}"}
    assert render_receipt("ar", RECEIPT, templates) == "Orange Jordan: 12.750 JOD paid. Ref PAY-000042"


def test_reversal_notice_exact_text():
    assert render_reversal_notice("en", RECEIPT) == (
        "Your payment of 12.500 JOD to Orange Jordan, account 0791234567, on "
        "2024-02-03 14:05 (card ****0010) was reversed. Ref PAY-000042."
    )
    assert "أورانج الأردن" in render_reversal_notice("ar", RECEIPT)


def test_default_templates_are_valid():
    validate_templates(DEFAULT_TEMPLATES)
    validate_templates(DEFAULT_REVERSAL_TEMPLATES)


@pytest.mark.parametrize(
    "templates, message",
    [
        ({"en": "ok {amount}", "ar": "{amount} {pan}"}, "'ar': unknown placeholder {pan}"),
        ({"en": "{amount.__class__}"}, "'en': unknown placeholder {amount.__class__}"),
        ({"en": "{} paid"}, "'en': unknown placeholder {}"),
        ({"en": "paid {amount"}, "'en': malformed"),
        ({"en": "{amount:d}"}, "'en': cannot render"),
        ({"ar": "{amount}"}, "no 'en' template"),
    ],
)
def test_validate_templates_names_language_and_placeholder(templates, message):
    with pytest.raises(ValueError) as e:
        validate_templates(templates)
    assert message in str(e.value)
