"""Dumps and annotations: exact layout, readable back, and free of card data;
the canonical examples decode with our codec and say what the doc says."""
import pytest

from billgw.iso8583 import examples
from billgw.iso8583.dump import annotate, hex_dump, parse_hex_dump, redact, safe_hex_dump
from billgw.iso8583.messages import decode_request, decode_response, encode_fields

PAN = "4761739001010010"
TRACK2 = PAN + "=49121200000000000"
PIN_BLOCK = "0123456789ABCDEF"


def test_hex_dump_layout_matches_hexdump_c():
    assert hex_dump(b"0800\x00\xffABCDEFGHIJKLMNOP") == (
        "00000000  30 38 30 30 00 ff 41 42  43 44 45 46 47 48 49 4a  |0800..ABCDEFGHIJ|\n"
        "00000010  4b 4c 4d 4e 4f 50                                 |KLMNOP|\n"
        "00000016"
    )


def test_hex_dump_of_nothing_is_just_the_length():
    assert hex_dump(b"") == "00000000"


@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)), b"\x00" * 64])
def test_parse_hex_dump_reads_back_every_byte(payload):
    assert parse_hex_dump(hex_dump(payload)) == payload


def test_parse_hex_dump_rejects_a_skipped_line():
    lines = hex_dump(bytes(48)).splitlines()
    with pytest.raises(ValueError, match="offset"):
        parse_hex_dump("\n".join([lines[0], lines[2]]))


def _card_message():
    return encode_fields("0200", {
        "2": PAN, "3": "500000", "4": "000000012500", "7": "0203140509", "11": "000125",
        "12": "170509", "13": "0203", "32": "123456", "35": TRACK2, "37": "403414000125",
        "41": "ATM00001", "48": "BC003TELSC006MOBILEBN0100791234567", "49": "400", "52": PIN_BLOCK,
    })


def test_annotate_masks_pan_and_removes_track2_and_pin():
    text = annotate(_card_message())
    assert PAN not in text and "49121200000000000" not in text and PIN_BLOCK not in text
    assert "F2   Primary Account Number (PAN)" in text and "[16] 476173******0010" in text
    assert "F35  Track 2 Data" in text and "F52  PIN Data" in text
    assert text.count("[removed: card data is never shown]") == 2


def test_annotate_breaks_f48_into_tags_with_their_meaning():
    lines = annotate(_card_message()).splitlines()
    tag_lines = [line.strip() for line in lines if line.startswith(" " * 10)]
    assert tag_lines == [
        "BC 003  TEL  (Biller code, e.g. TEL)",
        "SC 006  MOBILE  (Service code of the biller, e.g. MOBILE)",
        "BN 010  0791234567  (Billing number (subscriber / account number))",
    ]


def test_annotate_offsets_point_at_the_fields():
    payload = _card_message()
    for line in annotate(payload).splitlines()[1:]:
        if line.startswith(" "):
            continue
        offset, number = int(line[:4], 16), line[6:10].strip()
        if number == "F37":
            assert payload[offset : offset + 12] == b"403414000125"
        if number == "F48":
            assert payload[offset : offset + 8] == b"034BC003"


def test_annotate_never_raises_and_never_leaks_on_garbage():
    text = annotate(b"0200" + b"F" * 16 + PAN.encode())
    assert text.startswith("undecodable message:")
    assert PAN not in text


def test_redact_keeps_length_and_offsets_and_blanks_card_data():
    payload = _card_message()
    redacted = redact(payload)
    assert len(redacted) == len(payload)
    assert PAN.encode() not in redacted and b"49121200000000000" not in redacted
    assert PIN_BLOCK.encode() not in redacted
    assert b"16476173******0010" in redacted
    assert b"*" * len(TRACK2) in redacted
    changed = sum(a != b for a, b in zip(payload, redacted))
    assert changed == 6 + len(TRACK2) + len(PIN_BLOCK)  # PAN middle, track 2, PIN: nothing else
    assert PAN not in safe_hex_dump(payload).replace(" ", "")


def test_redact_undecodable_payload_by_pattern():
    redacted = redact(b"garbage " + TRACK2.encode() + b" and " + PAN.encode())
    assert redacted == b"garbage " + b"*" * len(TRACK2) + b" and 476173******0010"


def test_examples_decode_with_our_codec_and_use_the_test_pan_only():
    seen = []
    for title, description, payload in examples.all_examples():
        mti = payload[:4].decode()
        seen.append(mti)
        if mti[2] == "0":  # x0xx: a request
            assert decode_request(payload).mti == mti
        else:
            decode_response(payload)
        assert title.startswith(mti) and description
        assert b"=" not in payload  # no track data anywhere
    assert seen == ["0800", "0810", "0800", "0810", "0800", "0810", "0200", "0210", "0210", "0200", "0210",
                    "0210", "0210", "0220", "0230", "0420", "0430"]


def test_example_answers_say_what_their_titles_say():
    by_title = {title: payload for title, _, payload in examples.all_examples()}
    inquiry = decode_response(by_title["0210 inquiry answer"])
    assert inquiry.fields["39"] == "00" and inquiry.fields["3"] == "370000"
    assert inquiry.bill.customer_name and inquiry.bill.due_amount == 12500
    assert inquiry.bill.due_date == "20240115" and len(inquiry.bill.bills) == 2
    assert inquiry.bill.inquiry_reference == examples.INQUIRY_REFERENCE
    payment = decode_request(by_title["0200 bill payment"])
    assert payment.amount == 12500 and payment.bill.msisdn == "962791234567" and payment.bill.language == "ar"
    approved = decode_response(by_title["0210 payment approved"])
    assert (approved.fields["39"], approved.fields["38"], approved.fields["15"]) == ("00", "004711", "0203")
    assert approved.bill.receipt_number == "ORJ-778"
    assert approved.bill.payment_reference == examples.PAYMENT_REFERENCE
    for reference in (examples.INQUIRY_REFERENCE, examples.PAYMENT_REFERENCE):  # opaque journal ids
        assert len(reference) == 32 and int(reference, 16) >= 0
    ascii_answer = by_title["0210 inquiry answer to an ASCII-only peer"]
    ascii_answer.decode("ascii")
    assert decode_response(ascii_answer).bill.customer_name == "'hmd slh"
    cut_over = decode_response(by_title["0810 cut-over accepted"])
    assert (cut_over.fields["39"], cut_over.fields["70"], cut_over.fields["15"]) == ("00", "201", "0204")
    declined = decode_response(by_title["0210 payment declined (14)"])
    assert declined.fields["39"] == "14" and "38" not in declined.fields and declined.bill is None
    format_error = decode_response(by_title["0210 format error (30)"])
    assert format_error.fields["39"] == "30" and format_error.fields["11"] == "000126"


def test_advice_and_reversal_examples_name_the_documented_payment():
    by_title = {title: payload for title, _, payload in examples.all_examples()}
    payment = decode_request(by_title["0200 bill payment"])
    advice = decode_request(by_title["0220 payment advice"])
    assert advice.is_advice and not advice.is_repeat and advice.keys == payment.keys
    assert (advice.amount, advice.reason_code) == (payment.amount, "68")
    accepted = decode_response(by_title["0230 advice accepted"])
    assert accepted.fields["39"] == "00" and accepted.fields["11"] == "000125"
    assert not {"15", "38", "48"} & set(accepted.fields)
    reversal = decode_request(by_title["0420 reversal"])
    assert reversal.original_keys == payment.keys
    assert (reversal.stan, reversal.transmission_datetime) == ("000127", examples.REVERSAL_DATETIME)
    assert (reversal.amount, reversal.rrn, reversal.reason_code) == (12500, payment.rrn, "68")
    assert reversal.fields["90"] == "0200000125" "0203140509" "00000123456" "00000000000"
    acknowledged = decode_response(by_title["0430 reversal acknowledged"])
    assert acknowledged.fields["39"] == "00" and acknowledged.fields["90"] == reversal.fields["90"]
    assert acknowledged.fields["11"] == "000127"


def test_replace_generated_region_only_touches_the_region():
    doc = f"intro\n{examples.BEGIN_MARKER}\nold\n{examples.END_MARKER}\noutro\n"
    assert examples.replace_generated_region(doc, "new") == (
        f"intro\n{examples.BEGIN_MARKER}\nnew\n{examples.END_MARKER}\noutro\n")


def test_annotate_splits_f90_into_the_original_keys():
    payload = encode_fields("0420", {
        "3": "500000", "4": "000000012500", "7": "0203140610", "11": "000127", "37": "403414000125",
        "41": "ATM00001", "90": "0200" "000125" "0203140509" "00000123456" "00000654321",
    })
    lines = annotate(payload).splitlines()
    assert "0420 (reversal advice)" in lines[1]
    f90 = [i for i, line in enumerate(lines) if line[6:10].strip() == "F90"]
    assert len(f90) == 1
    assert [line.split("(")[0].split() for line in lines[f90[0] + 1 :]] == [
        ["MTI", "0200"], ["STAN", "000125"], ["F7", "0203140509"], ["ACQ", "00000123456"], ["FWD", "00000654321"]]
