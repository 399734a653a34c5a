"""Card numbers, tracks and control characters in free text (issue 9, 11).

Public test card numbers only: Visa 4761739001010010, Mastercard
5555555555554444, Amex 378282246310005; the tracks are made up around them.
"""
import uuid

import pytest

from billgw.iso8583.masking import (
    TRACK1_REMOVED,
    TRACK2_REMOVED,
    contains_card_data,
    escape_control,
    looks_like_pan,
    luhn_ok,
    mask_text,
)

# A public test card (Visa's published test PAN), never a real one; the
# track data built around it below is made up.
VISA = "4761739001010010"


def test_luhn():
    assert luhn_ok(VISA) and luhn_ok("5555555555554444") and luhn_ok("378282246310005")
    assert not luhn_ok("4761739001010011")
    assert not luhn_ok("47617390O1010010")
    assert looks_like_pan(VISA)
    assert not looks_like_pan("0" + VISA[1:])  # no issuer number starts with 0
    assert not looks_like_pan("476173900101")  # 12 digits


@pytest.mark.parametrize("written", [
    "4761 7390 0101 0010",
    "4761-7390-0101-0010",
    "00004761739001010010",  # zero-padded to 20 digits
    "0004761739001010010",
    "164761739001010010",  # behind its LLVAR prefix
    "BN0164761739001010010",  # behind its F48 TLV length
])
def test_a_pan_however_written_is_masked(written):
    masked = mask_text(f"card <{written}> end")
    assert VISA not in masked.replace(" ", "").replace("-", "")
    assert "476173" in masked and "0010" in masked
    assert masked.startswith("card <") and masked.endswith("> end")


def test_amex_grouping_is_masked():
    assert mask_text("3782-822463-10005") == "378282*****0005"
    assert mask_text("3782 822463 10005") == "378282*****0005"


def test_track2_with_either_separator_is_removed_whole():
    for track in (f";{VISA}=25121010000012300000?", f"{VISA}D25121010000012300000F", f"{VISA}=2512"):
        masked = mask_text(f"t2 {track} x")
        assert masked == f"t2 {TRACK2_REMOVED} x"


def test_track1_is_removed_whole_with_the_name_and_expiry():
    masked = mask_text(f"t1 %B{VISA}^HADDAD/LAYLA^25121010000000000000000000? x")
    assert masked == f"t1 {TRACK1_REMOVED} x"
    assert "HADDAD" not in masked and "2512" not in masked


def test_numbers_that_are_no_card_are_left_alone():
    text = "STAN 000125 amount 000000012500 msisdn 962791234567 rrn 632619000123"
    assert mask_text(text) == text
    assert mask_text("4761739001010011") == "4761739001010011"  # not Luhn-valid
    f90 = "0200000125020314050900000123456" + "0" * 11
    assert mask_text(f90) == f90  # 42 digits: original data elements, no card number


def test_payment_references_are_never_masked():
    """Issue 9: about 2% of 32-hex payment references were masked as if
    they were card numbers; now none is, and a customer's reference is
    always found in the log."""
    for _ in range(20000):
        ref = uuid.uuid4().hex
        line = f"payment settled payment_id={ref} ref {ref}."
        assert mask_text(line) == line
    # the worst case on purpose: a reference whose digits make a Luhn-valid run
    ref = VISA + "abcdef0123456789"
    assert mask_text(f"id {ref}") == f"id {ref}"


def test_contains_card_data():
    assert contains_card_data(f"x{VISA}")
    assert not contains_card_data("0791234567")


def test_control_characters_are_shown_escaped():
    assert escape_control("ATM\x1b[31m01\x07") == "ATM\\x1b[31m01\\x07"
    assert escape_control("a\u202eb\x9bc\nd") == "a\\u202eb\\x9bc\\nd"
    assert escape_control("الاتصالات 12.500") == "الاتصالات 12.500"
