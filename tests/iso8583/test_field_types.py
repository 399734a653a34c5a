"""Field content against its ISO type on the way in: a request whose field
breaks its type is a format error naming the field, and what the gateway
echoes can never make its own answer malformed for a strict decoder."""
import pytest

from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import Outcome, ResponseCodes
from billgw.iso8583.messages import MessageFormatError, decode_request, encode_fields, format_error_response

FIELDS = {"2": "4761739001010010", "3": "500000", "4": "000000012500", "7": "1122193000", "11": "000123",
          "12": "193000", "13": "1122", "32": "123456", "37": "632619000123", "41": "ATM00001", "49": "400",
          "48": BillRequestData("TEL", "MOBILE", "0791234567").to_tlv()}


def decode(**over):
    return decode_request(encode_fields("0200", {**FIELDS, **over}))


@pytest.mark.parametrize("field, value, kind", [
    ("37", "RRN 0001-A/B", "an"),   # Wireshark flagged our echo of this
    ("37", "6326190001_2", "an"),
    ("41", "ATM\x1b[2J0", "ans"),    # a terminal id that would drive an operator's terminal
    ("42", "SHOP\x00" + " " * 10, "ans"),
])
def test_a_field_outside_its_type_is_a_format_error_naming_it(field, value, kind):
    with pytest.raises(MessageFormatError) as caught:
        decode(**{field: value})
    assert caught.value.field == field and f"{kind}:" in str(caught.value)
    answer = format_error_response(caught.value, ResponseCodes().code(Outcome.FORMAT_ERROR))
    assert answer is not None and field not in answer.fields  # the faulty field is not echoed
    answer.encode()  # and the answer itself is well-formed


@pytest.mark.parametrize("field, value", [("41", "ATM 0001"), ("42", "Shop #12, Amman"), ("37", "A1B2C3D4E5F6")])
def test_values_within_their_type_pass(field, value):
    assert decode(**{field: value}).fields[field] == value


@pytest.mark.parametrize("over, field", [
    ({"3": "500010"}, "3"),           # to-account positions 5-6
    ({"3": "370000", "4": "000000000100"}, "4"),  # an inquiry with an amount
    ({"7": "1322193000"}, "7"),       # month 13
    ({"7": "0231193000"}, "7"),       # 31 February
    ({"7": "1122246000"}, "7"),       # 24:60
    ({"12": "196100"}, "12"),
    ({"13": "0000"}, "13"),
])
def test_semantics_the_types_let_through_are_format_errors(over, field):
    with pytest.raises(MessageFormatError) as caught:
        decode(**over)
    assert caught.value.field == field
    answer = format_error_response(caught.value, ResponseCodes().code(Outcome.FORMAT_ERROR))
    assert answer.fields["39"] == "30" and answer.fields["11"] == "000123"
    assert answer.fields["7"] == {**FIELDS, **over}["7"]  # the keys still match the answer to its request
    answer.encode()  # the answer is itself well-formed


def test_29_february_and_the_last_second_of_the_day_are_valid():
    request = decode(**{"7": "0229235959", "12": "235959", "13": "0229", "3": "371000", "4": "000000000000"})
    assert request.kind.value == "inquiry"


@pytest.mark.parametrize("amount", [b"0000000125000", b"1000000000000", b"9999999999999", b"00000001250"])
def test_an_amount_that_does_not_fit_f4_is_a_format_error_never_shifted(amount):
    """A 13-digit F4 (or 11) shifts every later field by one: never read as
    a tenth of the amount, and no key read out of place is echoed."""
    raw = encode_fields("0200", FIELDS)
    with pytest.raises(MessageFormatError) as caught:
        decode_request(raw.replace(b"000000012500", amount, 1))
    answer = format_error_response(caught.value, ResponseCodes().code(Outcome.FORMAT_ERROR))
    assert answer.mti == "0210" and answer.fields["39"] == "30"
    assert "4" not in answer.fields  # not the shifted amount
    assert not {"7", "11", "12", "13"} & set(answer.fields)  # shifted keys could match another request
    answer.encode()


def test_a_body_broken_late_still_echoes_the_keys_read_before_it():
    raw = encode_fields("0200", FIELDS)
    f49 = raw.rindex(b"400")  # F49 is the last field: cut the message inside it
    with pytest.raises(MessageFormatError) as caught:
        decode_request(raw[:f49 + 1])
    answer = format_error_response(caught.value, "30")
    assert {k: answer.fields[k] for k in ("7", "11", "32", "41")} == {
        "7": "1122193000", "11": "000123", "32": "123456", "41": "ATM00001"}
    assert "4" not in answer.fields


def test_an_amount_longer_than_f4_cannot_be_sent():
    with pytest.raises(MessageFormatError):
        encode_fields("0210", {**FIELDS, "4": "0000000125000", "39": "00"})
