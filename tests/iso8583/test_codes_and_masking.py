"""Response-code tables from conf/ and card-data masking in free text."""
import pytest

from billgw.iso8583.codes import DEFAULT_CODES, CodeEntry, Outcome, ResponseCodes
from billgw.iso8583.masking import mask_pan, mask_text


def test_default_table_both_ways():
    codes = ResponseCodes()
    assert codes.code(Outcome.APPROVED) == "00"
    assert codes.code(Outcome.BILLER_UNAVAILABLE) == "91"
    assert codes.text("14") == "Invalid billing number"
    assert codes.text("Q9") == "Unknown response code"


def test_from_mapping_overrides_over_defaults():
    codes = ResponseCodes.from_mapping({"bill_already_paid": {"code": "B1", "text": "Paid already"}})
    assert codes.code(Outcome.BILL_ALREADY_PAID) == "B1"
    assert codes.text("B1") == "Paid already"
    assert codes.code(Outcome.APPROVED) == "00"


def test_from_mapping_names_the_unknown_outcome():
    with pytest.raises(ValueError, match="unknown outcome 'bill_paid_twice'"):
        ResponseCodes.from_mapping({"bill_paid_twice": {"code": "55"}})


def test_from_mapping_names_the_unknown_key():
    with pytest.raises(ValueError, match="approved: unknown key 'colour'"):
        ResponseCodes.from_mapping({"approved": {"code": "00", "colour": "green"}})


def test_from_mapping_rejects_a_bad_code():
    with pytest.raises(ValueError, match="invalid_amount must be 2 alphanumerics"):
        ResponseCodes.from_mapping({"invalid_amount": {"code": "130"}})


def test_incomplete_table_names_the_missing_outcome():
    entries = {o: e for o, e in DEFAULT_CODES.items() if o is not Outcome.NO_BILL_DUE}
    with pytest.raises(ValueError, match="no_bill_due"):
        ResponseCodes(entries)
    entries[Outcome.NO_BILL_DUE] = CodeEntry("88", "x")
    assert ResponseCodes(entries).code(Outcome.NO_BILL_DUE) == "88"


def test_mask_pan_keeps_first_six_and_last_four():
    assert mask_pan("4761739001010010") == "476173******0010"
    assert mask_pan("4761739001010010123") == "476173*********0123"
    assert mask_pan("12345") == "*****"
    assert mask_pan(None) is None


def test_mask_text_masks_every_pan_and_drops_track2():
    # Public test cards only (Visa 4761739001010010, Mastercard 5555555555554444);
    # the "track" is made up around the test PAN.
    text = "card 4761739001010010 and 5555555555554444; track ;4761739001010010=49121200000000000?"
    masked = mask_text(text)
    assert masked == "card 476173******0010 and 555555******4444; track [TRACK2 REMOVED]"  # end sentinel too


def test_mask_text_leaves_short_numbers_alone():
    assert mask_text("STAN 000125 amount 12500 msisdn 962791234567") == (
        "STAN 000125 amount 12500 msisdn 962791234567")
