"""The dialect's codec: requests decode to typed requests, their answers echo the
matching keys, invalid messages say where they are wrong, and card data never
leaves the codec."""
import iso8583 as pyiso8583
import pytest

from billgw.iso8583.bill_data import BillLine, BillRequestData, BillResponseData, encode_tlv
from billgw.iso8583.messages import (
    BillRequest,
    MessageFormatError,
    NetworkRequest,
    RequestKind,
    decode_request,
    decode_response,
    describe_fields,
    encode_fields,
    format_error_response,
)
from billgw.iso8583.spec import SPEC, echo_fields

PAN = "4761739001010010"  # public Visa test card number
TRACK2 = PAN + "=49121200000000000"  # test PAN with a made-up expiry/service code
PIN_BLOCK = "0123456789ABCDEF"


def test_pyiso8583_is_the_library_not_our_folder():
    """Our iso8583/ folder must never shadow pyiso8583 (see setup.py)."""
    assert hasattr(pyiso8583, "decode") and hasattr(pyiso8583, "encode")
    assert "site-packages" in pyiso8583.__file__


def network_fields(code, stan="000001"):
    return {"7": "0203140509", "11": stan, "32": "123456", "70": code}


def financial_fields(processing_code="500000", amount="000000012500", **overrides):
    bill = BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567", language="ar")
    fields = {
        "2": PAN,
        "3": processing_code,
        "4": amount,
        "7": "0203140509",
        "11": "000125",
        "12": "170509",
        "13": "0203",
        "32": "123456",
        "33": "654321",
        "37": "403414000125",
        "41": "ATM00001",
        "42": "BANK0000000001 ",
        "48": bill.to_tlv(),
        "49": "400",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize("code,action", [("001", "sign_on"), ("002", "sign_off"), ("301", "echo")])
def test_network_round_trip(code, action):
    request = decode_request(encode_fields("0800", network_fields(code)))
    assert isinstance(request, NetworkRequest)
    assert (request.action, request.stan, request.transmission_datetime) == (action, "000001", "0203140509")
    wire = request.respond("00").encode()
    assert wire.startswith(b"0810")
    answer = decode_response(wire)
    assert answer.mti == "0810"
    assert answer.fields == {"7": "0203140509", "11": "000001", "32": "123456", "70": code, "39": "00"}


def test_inquiry_round_trip_echoes_every_key_and_carries_the_bill():
    fields = financial_fields("370000", "000000000000")
    request = decode_request(encode_fields("0200", fields))
    assert isinstance(request, BillRequest)
    assert request.kind is RequestKind.INQUIRY
    assert request.amount == 0 and request.currency == "400" and request.rrn == "403414000125"
    assert request.bill.biller_code == "TEL" and request.bill.billing_number == "0791234567"
    bill = BillResponseData(
        customer_name="أحمد صالح", due_amount=12500, due_date="20240115", fee=250,
        bills=(BillLine("2024-01", 7500, "20240115"), BillLine("2024-02", 5000, "20240215")),
        inquiry_reference="INQ-1",
    )
    answer = decode_response(request.respond_bill("00", bill=bill).encode())
    assert answer.mti == "0210" and answer.response_code == "00"
    for f in echo_fields("0210"):
        assert answer.fields.get(f) == fields.get(f), f
    assert "2" not in answer.fields  # the PAN is not echoed
    assert answer.bill == bill


def test_payment_round_trip_with_approval_code_and_settlement_date():
    fields = financial_fields()
    request = decode_request(encode_fields("0200", fields))
    assert request.kind is RequestKind.PAYMENT and request.amount == 12500
    assert request.keys.acquirer_id == "123456" and request.keys.terminal_id == "ATM00001"
    assert request.bill.msisdn == "962791234567" and request.bill.language == "ar"
    assert request.masked_pan == "476173******0010"
    bill = BillResponseData(receipt_number="ORJ-778", payment_reference="PAY-000042")
    wire = request.respond_bill("00", bill=bill, auth_code="004711", settlement_date="0203").encode()
    answer = decode_response(wire)
    assert {f: answer.fields[f] for f in echo_fields("0210")} == {f: fields[f] for f in echo_fields("0210")}
    assert answer.fields["38"] == "004711" and answer.fields["15"] == "0203"
    assert answer.bill.receipt_number == "ORJ-778" and answer.bill.payment_reference == "PAY-000042"
    assert b"RN007ORJ-778PR010PAY-000042" in wire


def test_account_instead_of_pan_is_accepted():
    request = decode_request(encode_fields("0200", financial_fields(**{"2": None, "102": "0012345678"})))
    assert request.account == "0012345678" and request.masked_pan is None


# --- errors -----------------------------------------------------------------

def test_truncated_message_names_the_field_and_position():
    wire = encode_fields("0200", financial_fields())
    with pytest.raises(MessageFormatError) as info:
        decode_request(wire[:-10])  # cuts into F48's value
    err = info.value
    assert err.field == "48"
    assert err.position == wire.index(b"BC003")  # where F48's value starts
    assert err.mti == "0200" and err.fields["11"] == "000125"


def test_non_numeric_amount_is_field_4_and_not_echoed():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(amount="0000012.5000")))
    err = info.value
    assert err.field == "4"
    assert "4" not in err.fields and err.fields["41"] == "ATM00001"
    response = format_error_response(err, "30")
    assert response.mti == "0210" and response.fields["39"] == "30"
    assert "4" not in response.fields
    assert {f: response.fields[f] for f in ("3", "7", "11", "32", "37", "41")} == {
        "3": "500000", "7": "0203140509", "11": "000125", "32": "123456", "37": "403414000125", "41": "ATM00001"}
    assert decode_response(response.encode()).fields["39"] == "30"


@pytest.mark.parametrize("missing", ["3", "4", "7", "11", "12", "13", "32", "37", "41", "48", "49"])
def test_missing_mandatory_field(missing):
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(**{missing: None})))
    assert info.value.field == missing
    assert "mandatory" in info.value.reason


def test_missing_mandatory_network_code():
    fields = network_fields("001")
    del fields["70"]
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0800", fields))
    assert info.value.field == "70"


def test_neither_pan_nor_account():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(**{"2": None})))
    assert info.value.field == "2"


def test_bad_tlv_reports_field_48_and_byte_offset():
    good = encode_tlv([("BC", "TEL"), ("SC", "MOBILE")])
    bad = good + "BNxyz0791234567"  # length is not 3 digits
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(**{"48": bad})))
    assert info.value.field == "48"
    assert info.value.position == len(good) + 2  # the length after the tag


def test_tlv_length_beyond_the_field():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(**{"48": "BC003TELSC050MOBILE"})))
    assert (info.value.field, info.value.position) == ("48", 8)


def test_tlv_missing_billing_number_tag():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(**{"48": encode_tlv([("BC", "TEL"), ("SC", "M")])})))
    assert info.value.field == "48" and "BN" in info.value.reason


def test_unsupported_mti():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0100", financial_fields()))
    assert (info.value.field, info.value.position, info.value.mti) == ("t", 0, "0100")
    assert format_error_response(info.value, "30") is None  # nothing we could answer


@pytest.mark.parametrize("code", ["000000", "310000", "990000"])
def test_processing_code_neither_inquiry_nor_payment(code):
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", financial_fields(code)))
    assert info.value.field == "3"
    response = format_error_response(info.value, "12")
    assert response.fields["3"] == code and response.fields["39"] == "12"


def test_garbage_is_a_format_error_not_a_crash():
    with pytest.raises(MessageFormatError):
        decode_request(b"\xff\x00garbage")
    with pytest.raises(MessageFormatError):
        decode_request(b"")


def test_format_error_response_keeps_exactly_the_echo_keys_it_had():
    fields = financial_fields(**{"48": "BC003TE"})  # broken TLV, everything else fine
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", fields))
    response = format_error_response(info.value, "30")
    expected = {f: fields[f] for f in echo_fields("0210")}
    expected["39"] = "30"
    assert dict(response.fields) == expected


# --- card data ----------------------------------------------------------------

def card_fields(**overrides):
    return financial_fields(**{"35": TRACK2, "52": PIN_BLOCK, **overrides})


def _assert_no_card_data(text):
    assert PAN not in text
    assert "49121200000000000" not in text
    assert PIN_BLOCK not in text


def test_typed_request_holds_no_card_data():
    request = decode_request(encode_fields("0200", card_fields()))
    assert not {"2", "35", "52"} & set(request.fields)
    _assert_no_card_data(repr(request) + repr(dict(request.fields)))
    assert request.masked_pan == "476173******0010"


@pytest.mark.parametrize("overrides,field", [
    ({"4": "00000001250X"}, "4"),
    ({"48": "BC003TE"}, "48"),
    ({"3": "990000"}, "3"),
    ({"41": None}, "41"),
])
def test_error_texts_and_partial_fields_hold_no_card_data(overrides, field):
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0200", card_fields(**overrides)))
    err = info.value
    assert err.field == field
    _assert_no_card_data(str(err) + err.reason + repr(err.fields))
    assert not {"2", "35", "52"} & set(err.fields)


def test_truncated_in_track2_error_holds_no_card_data():
    wire = encode_fields("0200", card_fields())
    cut = wire.index(TRACK2.encode()) + 20
    with pytest.raises(MessageFormatError) as info:
        decode_request(wire[:cut])
    assert info.value.field == "35"
    _assert_no_card_data(str(info.value) + repr(info.value.fields))


def test_describe_fields_masks_pan_and_removes_track_and_pin():
    described = describe_fields(encode_fields("0200", card_fields()))
    assert described["2"] == "476173******0010"
    assert described["35"] == "[removed]" and described["52"] == "[removed]"
    assert described["4"] == "000000012500" and described["t"] == "0200"
    _assert_no_card_data(repr(described))


def test_secondary_bitmap_only_when_a_high_field_is_present():
    """A reader of the spec relies on this: bit 1 means 'secondary bitmap follows'."""
    low = encode_fields("0200", financial_fields())
    expected = sum(1 << (64 - f) for f in (2, 3, 4, 7, 11, 12, 13, 32, 33, 37, 41, 42, 48, 49))
    assert low[4:20] == f"{expected:016X}".encode()
    assert low[20:22] == b"16"  # F2's LL follows the primary bitmap directly
    high = encode_fields("0200", financial_fields(**{"102": "0012345678"}))
    assert int(high[4:20], 16) >> 63 == 1
    assert int(high[20:36], 16) == 1 << (64 - (102 - 64))
    assert SPEC["p"]["max_len"] == 16
