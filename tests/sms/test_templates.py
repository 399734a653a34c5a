"""Receipt texts: exact wording, integer amount formatting, card masking."""
import datetime as dt

import pytest

from billgw.sms.templates import (
    DEFAULT_REVERSAL_TEMPLATES,
    DEFAULT_TEMPLATES,
    ReceiptData,
    format_minor_units,
    render_receipt,
    pick_template,
    render_reversal_notice,
    short_reference,
    validate_templates,
)
from billgw.sms.encoding import DATA_CODING_GSM7, fold_to_gsm7, split_message

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
    reference="3f9a1c07b2e84d0f9c51a6b7d2e3f405",
    masked_pan="476173******0010",
)


def test_english_receipt_exact_text():
    assert render_receipt("en", RECEIPT) == (
        "Paid 12.500 JOD to Orange Jordan, acct 0791234567, bill 2024-01, fee 0.250, "
        "03/02/24 14:05, card ****0010. Ref 3F9A1C07B2"
    )


def test_arabic_receipt_uses_arabic_biller_name_and_same_figures():
    text = render_receipt("ar", RECEIPT)
    assert text == "دفع 12.500 JOD إلى أورانج الأردن 0791234567 رسوم 0.250 مرجع 3F9A1C07B2"
    assert "Orange" not in text


def test_greek_receipt_in_capitals_goes_as_gsm7():
    text = render_receipt("el", RECEIPT)
    # Α, Η, Ρ, Μ... are sent as the Latin letters drawn the same; Π, Λ, Ω, Σ are GSM-7.
    assert text == ("ΠΛHPΩMH 12.500 JOD ΣE Orange Jordan, ΛOΓ. 0791234567, ΛOΓ/ΣMOΣ 2024-01, "
                    "ΠPOM. 0.250, 03/02/24 14:05, KAPTA ****0010. KΩΔ. 3F9A1C07B2")
    assert split_message(text).data_coding == DATA_CODING_GSM7


@pytest.mark.parametrize("language, limit", [("en", 160), ("el", 160), ("ar", 70)])
def test_default_receipts_fit_one_part(language, limit):
    for render in (render_receipt, render_reversal_notice):
        text = render(language, RECEIPT)
        message = split_message(text)
        assert len(message.parts) == 1 and message.units <= limit, (language, message.units, text)


def test_the_short_reference_is_the_ids_first_ten_characters_upper_case():
    assert short_reference("3f9a1c07b2e84d0f9c51a6b7d2e3f405") == "3F9A1C07B2"
    assert render_receipt("en", RECEIPT).endswith("Ref 3F9A1C07B2")


def test_templates_per_biller_and_language_with_their_fallback_order():
    templates = {"en": "generic en {short_reference}", "ar": "generic ar",
                 "TEL/ar": "tel ar {biller_name}", "TEL/en": "tel en {biller_name}"}
    tel = ReceiptData(**dict(RECEIPT.__dict__, biller_code="TEL"))
    wat = ReceiptData(**dict(RECEIPT.__dict__, biller_code="WAT"))
    assert render_receipt("ar", tel, templates) == "tel ar أورانج الأردن"      # biller + language
    assert render_receipt("ar", wat, templates) == "generic ar"                # language
    assert render_receipt("el", tel, templates) == "tel en Orange Jordan"      # biller + en
    assert render_receipt("el", wat, templates) == "generic en 3F9A1C07B2"     # en
    assert pick_template("AR-jo", templates, "TEL")[:2] == ("TEL/ar", "ar")


def test_a_text_that_cannot_be_gsm7_is_not_folded():
    # Lower-case Greek has no GSM-7 form: the text goes as UCS-2, untouched.
    assert fold_to_gsm7("Πληρωμή ΟΚ") == "Πληρωμή ΟΚ"
    assert fold_to_gsm7("ΟΚ") == "OK"


def test_language_tags_are_normalised_and_unknown_falls_back_to_english():
    assert render_receipt("AR-jo", RECEIPT) == render_receipt("ar", RECEIPT)
    assert render_receipt("fr", RECEIPT) == render_receipt("en", RECEIPT)
    assert render_receipt("", RECEIPT) == render_receipt("en", RECEIPT)


def test_no_more_than_last_four_card_digits_appear():
    for lang in ("en", "el", "ar"):
        for render in (render_receipt, render_reversal_notice):
            text = render(lang, RECEIPT)
            assert "476173" not in text
            if lang != "ar":  # the one-part Arabic receipt names the account, not the card
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
    assert "Paid 1500.00 SYP" in text and "fee 0.00," in text and "bill -," in text


def test_custom_templates_from_configuration_are_used():
    templates = {"en": "{biller_name}: {total} {currency_code} paid. Ref {reference}"}
    assert render_receipt("ar", RECEIPT, templates) == (
        "Orange Jordan: 12.750 JOD paid. Ref 3f9a1c07b2e84d0f9c51a6b7d2e3f405")


def test_reversal_notice_exact_text():
    assert render_reversal_notice("en", RECEIPT) == (
        "Your payment of 12.500 JOD to Orange Jordan, acct 0791234567, on "
        "03/02/24 14:05 (card ****0010) was reversed. Ref 3F9A1C07B2"
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
        ({"en": "ok", "/ar": "{amount}"}, "keys are LANGUAGE or BILLER/LANGUAGE"),
        ({"en": "ok", "TEL/ar": "{pan}"}, "'TEL/ar': unknown placeholder {pan}"),
    ],
)
def test_validate_templates_names_language_and_placeholder(templates, message):
    with pytest.raises(ValueError) as e:
        validate_templates(templates)
    assert message in str(e.value)
