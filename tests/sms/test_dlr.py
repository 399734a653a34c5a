"""Delivery receipts read from deliver_sm: TLVs, the text form and its
vendor variants, message ids in another case/base, and a message's final
state from its parts'."""
import datetime as dt

import pytest

from billgw.sms.dlr import NotAReceipt, candidate_keys, combine, message_key, parse_receipt, parse_text

TEXT = b"id:0A1B2C sub:001 dlvrd:001 submit date:2412060415 done date:2412060416 stat:DELIVRD err:000 text:Paid"


def test_tlvs_win_and_the_text_fills_in_the_error_and_done_date():
    r = parse_receipt(esm_class=0x04, short_message=TEXT.replace(b"DELIVRD", b"UNDELIV"),
                      receipted_message_id=b"0a1b2c", message_state=2)
    assert (r.message_id, r.stat, r.error, r.source) == ("0a1b2c", "DELIVRD", "000", "tlv")
    assert r.done_at == dt.datetime(2024, 12, 6, 4, 16)


def test_text_only_receipt():
    r = parse_receipt(esm_class=0x04, short_message=TEXT)
    assert (r.message_id, r.stat, r.error, r.source, r.final) == ("0A1B2C", "DELIVRD", "000", "text", True)


@pytest.mark.parametrize("text, stat", [
    (b"ID:77 SUB:001 DLVRD:000 SUBMIT DATE:2412060415 DONE DATE:2412060416 STAT:UNDELIV ERR:001", "UNDELIV"),
    (b"id:77 submit_date:241206041501 done_date:241206041601 stat:undeliverable err:034", "UNDELIV"),
    (b"id: 77 stat: EXPIRED", "EXPIRED"),
    (b"id:77 stat:DELIVERED text:id:99 stat:UNDELIV", "DELIVRD"),  # the echoed text is not read
    (b"id=77 stat=REJECTD", "REJECTD"),
    (b"id:77 stat:ACCEPTD", "ACCEPTD"),
])
def test_vendor_variants_of_the_text(text, stat):
    r = parse_receipt(esm_class=0x04, short_message=text)
    assert (r.message_id, r.stat) == ("77", stat)


def test_dates_with_seconds_are_read():
    assert parse_text(b"done date:241206041659")["done_date"] == "241206041659"
    r = parse_receipt(esm_class=4, short_message=b"id:1 done date:241206041659 stat:DELIVRD")
    assert r.done_at == dt.datetime(2024, 12, 6, 4, 16, 59)


def test_an_mo_message_is_not_a_receipt():
    with pytest.raises(NotAReceipt):
        parse_receipt(esm_class=0x00, short_message=b"hello, what is my balance?")


def test_a_receipt_without_a_state_names_what_is_missing():
    with pytest.raises(ValueError, match="without a known state"):
        parse_receipt(esm_class=0x04, short_message=b"id:5 stat:WHATEVER")
    with pytest.raises(ValueError, match="without a message id"):
        parse_receipt(esm_class=0x04, short_message=b"stat:DELIVRD")


def test_receipt_recognised_by_its_tlv_even_without_the_esm_class_flag():
    r = parse_receipt(esm_class=0x00, receipted_message_id=b"42", message_state=5)
    assert (r.message_id, r.stat, r.source) == ("42", "UNDELIV", "tlv")


def test_message_keys_ignore_case_and_leading_zeros_and_try_the_other_base():
    assert message_key("000A1B") == message_key("a1b") == "a1b"
    assert message_key("0000") == "0"
    # all digits: hex 0x255 (597) in the response, or decimal 255 (0xff)
    assert candidate_keys("000255") == ["255", "597", "ff"]
    assert candidate_keys("FF") == ["ff", "255"]
    assert candidate_keys("smsc-000001") == ["smsc-000001"]


@pytest.mark.parametrize("stats, parts, final", [
    (["DELIVRD", "DELIVRD", "DELIVRD"], 3, "DELIVERED"),
    (["DELIVRD", "DELIVRD", None], 3, None),  # a part has no receipt yet
    (["DELIVRD", "DELIVRD"], 3, None),  # a part's row is missing: not all delivered
    (["DELIVRD", "UNDELIV", None], 3, "UNDELIVERABLE"),  # one lost part decides at once
    (["EXPIRED", "DELIVRD"], 2, "EXPIRED"),
    (["EXPIRED", "REJECTD"], 2, "UNDELIVERABLE"),
    (["ENROUTE"], 1, None),
    (["ACCEPTD", "DELIVRD"], 2, None),
])
def test_a_messages_final_state_from_its_parts(stats, parts, final):
    assert combine(stats, parts) == final
