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
