"""Payment advices (0220/0221 -> 0230) and reversals (0420/0421 -> 0430).

What the gateway relies on: an advice is a payment with the keys of the 0200
it completes; a reversal's ``original_keys`` equal the ``keys`` of the 0200
it undoes whatever zero-filling F32 and F90 used; repeats are laid out and
answered exactly like the first transmission; card data stays out."""
import pytest

from billgw.iso8583.bill_data import BillRequestData, BillResponseData
from billgw.iso8583.messages import (
    AcquirerKeys,
    BillRequest,
    MessageFormatError,
    OriginalData,
    RequestKind,
    ReversalRequest,
    decode_request,
    decode_response,
    encode_fields,
    format_error_response,
    normalise_institution_id,
    response_mti,
)
from billgw.iso8583.spec import echo_fields, mandatory_fields

PAN = "4761739001010010"  # public Visa test card number
TRACK2 = PAN + "=49121200000000000"
PIN_BLOCK = "0123456789ABCDEF"

# F90 of a reversal of the 0200 below: MTI, STAN, F7, acquirer, no forwarder.
F90 = "0200" "000125" "0203140509" "00000123456" "00000000000"


def payment_fields(**overrides):
    bill = BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567", language="ar")
    fields = {
        "2": PAN, "3": "500000", "4": "000000012500", "7": "0203140509", "11": "000125",
        "12": "170509", "13": "0203", "32": "123456", "37": "403414000125", "41": "ATM00001",
        "42": "BANK0000000001 ", "48": bill.to_tlv(), "49": "400",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


def reversal_fields(**overrides):
    fields = {
        "3": "500000", "4": "000000012500", "7": "0203140610", "11": "000127", "12": "170610",
        "13": "0203", "32": "123456", "37": "403414000125", "39": "68", "41": "ATM00001",
        "49": "400", "90": F90,
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


# --- F90 ---------------------------------------------------------------------

def test_original_data_parse_splits_the_five_parts_and_normalises_the_ids():
    original = OriginalData.parse("0200" "000125" "0203140509" "00000123456" "00000654321")
    assert original == OriginalData(mti="0200", stan="000125", transmission_datetime="0203140509",
                                    acquirer_id="123456", forwarder_id="654321")


def test_original_data_without_forwarder_is_none_and_formats_back_to_zeros():
    original = OriginalData.parse(F90)
    assert original.forwarder_id is None
    assert original.format() == F90


@pytest.mark.parametrize("f90", [
    F90,
    "0220" "999999" "1231235959" "99999999999" "00000000001",
    "0200" "000001" "0101000000" "00000000000" "10000000000",  # all-zero acquirer, forwarder with trailing zeros
])
def test_original_data_round_trip(f90):
    assert OriginalData.parse(f90).format() == f90
    assert len(OriginalData.parse(f90).format()) == 42


def test_all_zero_acquirer_id_is_zero_not_empty():
    original = OriginalData.parse("0200" "000001" "0101000000" "00000000000" "00000000000")
    assert (original.acquirer_id, original.forwarder_id) == ("0", None)


def test_format_zero_fills_ids_given_in_f32_form():
    original = OriginalData("0200", "000125", "0203140509", "123456", "654321")
    assert original.format() == "0200000125020314050900000123456" "00000654321"


@pytest.mark.parametrize("f90", [F90[:-1], F90 + "0", "", "0200 00125" + F90[10:], "0200x00125" + F90[10:],
                                 "0200" + "٠" * 6 + F90[10:]])  # Arabic-Indic digits are not ASCII digits
def test_original_data_parse_refuses_anything_but_42_ascii_digits(f90):
    with pytest.raises(MessageFormatError) as info:
        OriginalData.parse(f90)
    assert info.value.field == "90"


def test_original_data_format_refuses_an_id_longer_than_11_digits():
    with pytest.raises(MessageFormatError) as info:
        OriginalData("0200", "000125", "0203140509", "123456789012", None).format()
    assert info.value.field == "90"


@pytest.mark.parametrize("raw,normalised", [
    ("123456", "123456"), ("00000123456", "123456"), ("0123456", "123456"), ("00000000000", "0"),
    ("0", "0"), ("100", "100")])
def test_normalise_institution_id(raw, normalised):
    assert normalise_institution_id(raw) == normalised


# --- repeats use their original's rows -------------------------------------------

def test_repeats_share_their_originals_field_rows():
    assert mandatory_fields("0221") == mandatory_fields("0220") == (
        "3", "4", "7", "11", "12", "13", "32", "37", "41", "48", "49")
    assert mandatory_fields("0421") == mandatory_fields("0420") == ("3", "4", "7", "11", "37", "41", "90")
    assert echo_fields("0230") == echo_fields("0210")
    assert echo_fields("0430") == ("3", "4", "7", "11", "12", "13", "32", "33", "37", "41", "49", "90")
    assert (response_mti("0221"), response_mti("0421")) == ("0230", "0430")


# --- advices -------------------------------------------------------------------

@pytest.mark.parametrize("mti,repeat", [("0220", False), ("0221", True)])
def test_advice_decodes_to_a_payment_with_the_keys_of_its_0200(mti, repeat):
    original = decode_request(encode_fields("0200", payment_fields()))
    advice = decode_request(encode_fields(mti, payment_fields(**{"39": "68"})))
    assert isinstance(advice, BillRequest)
    assert (advice.mti, advice.kind, advice.is_advice, advice.is_repeat) == (mti, RequestKind.PAYMENT, True, repeat)
    assert advice.reason_code == "68"
    assert advice.amount == 12500 and advice.bill.billing_number == "0791234567"
    assert advice.keys == original.keys == AcquirerKeys("123456", "ATM00001", "000125", "0203140509")
    assert (original.is_advice, original.is_repeat, original.reason_code) == (False, False, None)


def test_advice_reason_is_optional():
    advice = decode_request(encode_fields("0220", payment_fields()))
    assert advice.reason_code is None and advice.is_advice


@pytest.mark.parametrize("mti", ["0220", "0221"])
def test_an_inquiry_cannot_be_advised(mti):
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields(mti, payment_fields(**{"3": "370000", "4": "000000000000"})))
    assert info.value.field == "3" and "advice" in info.value.reason
    response = format_error_response(info.value, "30")
    assert response.mti == "0230" and response.fields["39"] == "30"
    assert (response.fields["3"], response.fields["11"], response.fields["41"]) == ("370000", "000125", "ATM00001")


@pytest.mark.parametrize("missing", ["3", "4", "7", "11", "12", "13", "32", "37", "41", "48", "49"])
def test_advice_missing_mandatory_field(missing):
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0221", payment_fields(**{missing: None})))
    assert info.value.field == missing and "mandatory" in info.value.reason


def test_advice_needs_pan_or_account():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0220", payment_fields(**{"2": None})))
    assert info.value.field == "2"
    advice = decode_request(encode_fields("0220", payment_fields(**{"2": None, "102": "0012345678"})))
    assert advice.account == "0012345678" and advice.masked_pan is None


def test_advice_answer_is_0230_with_the_0210_echo_fields_and_nothing_else():
    fields = payment_fields(**{"39": "68", "33": "654321"})
    advice = decode_request(encode_fields("0220", fields))
    # The gateway may answer through respond_bill like a 0200: a 0230 still
    # carries no settlement date, approval code or bill data.
    response = advice.respond_bill("00", bill=BillResponseData(receipt_number="ORJ-778"),
                                   auth_code="004711", settlement_date="0203")
    expected = {f: fields[f] for f in ("3", "4", "7", "11", "12", "13", "32", "33", "37", "41", "42", "49")}
    expected["39"] = "00"
    assert response.mti == "0230"
    assert dict(response.fields) == expected
    answer = decode_response(response.encode())
    assert answer.mti == "0230" and dict(answer.fields) == expected and answer.bill is None


def test_0221_is_answered_byte_for_byte_like_its_0220():
    first = decode_request(encode_fields("0220", payment_fields()))
    repeat = decode_request(encode_fields("0221", payment_fields()))
    assert repeat.respond_bill("94").encode() == first.respond_bill("94").encode()
    assert repeat.respond_bill("94").encode().startswith(b"0230")


def test_advice_typed_fields_hold_no_card_data():
    advice = decode_request(encode_fields("0220", payment_fields(**{"35": TRACK2, "52": PIN_BLOCK})))
    assert not {"2", "35", "52"} & set(advice.fields)
    text = repr(advice) + repr(dict(advice.fields)) + repr(advice.respond_bill("00"))
    assert PAN not in text and "49121200000000000" not in text and PIN_BLOCK not in text
    assert advice.masked_pan == "476173******0010"


# --- reversals -----------------------------------------------------------------

@pytest.mark.parametrize("mti,repeat", [("0420", False), ("0421", True)])
def test_reversal_decodes_with_its_original(mti, repeat):
    reversal = decode_request(encode_fields(mti, reversal_fields()))
    assert isinstance(reversal, ReversalRequest)
    assert (reversal.mti, reversal.is_repeat, reversal.reason_code) == (mti, repeat, "68")
    assert (reversal.stan, reversal.transmission_datetime) == ("000127", "0203140610")  # its own
    assert (reversal.amount, reversal.currency, reversal.rrn, reversal.processing_code) == (
        12500, "400", "403414000125", "500000")
    assert reversal.original == OriginalData("0200", "000125", "0203140509", "123456", None)


@pytest.mark.parametrize("f32,f90_acquirer", [
    ("123456", "00000123456"),  # the usual: LLVAR F32, zero-filled F90
    ("00123456", "00000123456"),  # a switch that zero-pads F32 too
    ("12345678901", "12345678901"),  # a full 11-digit ID: nothing to strip
    ("0", "00000000000"),
])
def test_reversal_original_keys_equal_the_keys_of_its_0200(f32, f90_acquirer):
    payment = decode_request(encode_fields("0200", payment_fields(**{"32": f32})))
    f90 = "0200" "000125" "0203140509" + f90_acquirer + "00000000000"
    reversal = decode_request(encode_fields("0420", reversal_fields(**{"32": f32, "90": f90})))
    assert reversal.original_keys == payment.keys
    advice = decode_request(encode_fields("0220", payment_fields(**{"32": f32})))
    assert advice.keys == payment.keys


def test_original_keys_take_the_terminal_from_this_reversal_and_the_rest_from_f90():
    reversal = decode_request(encode_fields("0420", reversal_fields(
        **{"32": "999", "41": "ATM00042", "90": "0200" "000777" "0201101010" "00000123456" "00000000000"})))
    assert reversal.original_keys == AcquirerKeys("123456", "ATM00042", "000777", "0201101010")


def test_a_different_original_gives_different_keys():
    payment = decode_request(encode_fields("0200", payment_fields()))
    for f90 in ("0200" "000126" "0203140509" "00000123456" "00000000000",  # other STAN
                "0200" "000125" "0203140510" "00000123456" "00000000000",  # other F7
                "0200" "000125" "0203140509" "00001234560" "00000000000"):  # other acquirer
        reversal = decode_request(encode_fields("0420", reversal_fields(**{"90": f90})))
        assert reversal.original_keys != payment.keys, f90


def test_reversal_optional_fields_may_be_absent():
    reversal = decode_request(encode_fields("0420", reversal_fields(
        **{"12": None, "13": None, "32": None, "39": None, "49": None})))
    assert reversal.currency is None and reversal.reason_code is None
    assert reversal.original_keys.acquirer_id == "123456"
    assert dict(reversal.respond("00").fields) == {
        "3": "500000", "4": "000000012500", "7": "0203140610", "11": "000127", "37": "403414000125",
        "41": "ATM00001", "90": F90, "39": "00"}


def test_a_reversal_is_decoded_whatever_the_original_processing_code():
    """Every reversal is acknowledged: F3 is the original's, not checked here."""
    reversal = decode_request(encode_fields("0420", reversal_fields(**{"3": "370000"})))
    assert reversal.processing_code == "370000"


@pytest.mark.parametrize("missing", ["3", "4", "7", "11", "37", "41", "90"])
def test_reversal_missing_mandatory_field(missing):
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0421", reversal_fields(**{missing: None})))
    assert info.value.field == missing and info.value.mti == "0421"


@pytest.mark.parametrize("mti", ["0420", "0421"])
def test_reversal_answer_is_0430_echoing_both_keys(mti):
    fields = reversal_fields(**{"33": "654321", "2": PAN, "48": "BC003TEL"})
    reversal = decode_request(encode_fields(mti, fields))
    wire = reversal.respond("00").encode()
    expected = {f: fields[f] for f in ("3", "4", "7", "11", "12", "13", "32", "33", "37", "41", "49", "90")}
    expected["39"] = "00"  # ours, not the switch's reason 68
    answer = decode_response(wire)
    assert answer.mti == "0430" and dict(answer.fields) == expected
    assert wire.startswith(b"0430") and F90.encode() in wire and PAN.encode() not in wire


def test_0421_is_answered_byte_for_byte_like_its_0420():
    first = decode_request(encode_fields("0420", reversal_fields()))
    repeat = decode_request(encode_fields("0421", reversal_fields()))
    assert repeat.respond("00").encode() == first.respond("00").encode()


def test_f90_of_the_wrong_length_is_answered_0430_with_the_keys():
    full = encode_fields("0420", reversal_fields())
    assert full.endswith(F90.encode())  # F90 is the last field: cut into it
    wire = full[:-12]
    with pytest.raises(MessageFormatError) as info:
        decode_request(wire)
    assert info.value.field == "90" and info.value.mti == "0420"
    response = format_error_response(info.value, "30")
    assert response.mti == "0430"
    # The keys, not F4: an amount read from a body that could not be read
    # to its end may be shifted (test_field_types.py).
    assert dict(response.fields) == {
        "3": "500000", "7": "0203140610", "11": "000127", "12": "170610", "13": "0203",
        "32": "123456", "37": "403414000125", "41": "ATM00001", "49": "400", "39": "30"}
    assert decode_response(response.encode()).fields["11"] == "000127"


def test_non_numeric_f90_is_a_format_error_on_field_90_without_echoing_it():
    bad = F90[:20] + "0000012345A" + F90[31:]
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0421", reversal_fields(**{"90": bad})))
    assert info.value.field == "90"
    response = format_error_response(info.value, "30")
    assert response.mti == "0430" and "90" not in response.fields
    assert (response.fields["7"], response.fields["11"], response.fields["41"], response.fields["39"]) == (
        "0203140610", "000127", "ATM00001", "30")


def test_reversal_typed_fields_hold_no_card_data():
    reversal = decode_request(encode_fields("0420", reversal_fields(**{"2": PAN, "35": TRACK2, "52": PIN_BLOCK})))
    assert not {"2", "35", "52"} & set(reversal.fields)
    assert reversal.masked_pan == "476173******0010"
    text = repr(reversal) + repr(dict(reversal.fields)) + repr(reversal.original) + repr(reversal.respond("00"))
    assert PAN not in text and "49121200000000000" not in text and PIN_BLOCK not in text


def test_error_on_a_reversal_holds_no_card_data():
    with pytest.raises(MessageFormatError) as info:
        decode_request(encode_fields("0420", reversal_fields(**{"2": PAN, "52": PIN_BLOCK, "41": None})))
    text = str(info.value) + repr(info.value.fields)
    assert PAN not in text and PIN_BLOCK not in text
    assert not {"2", "52"} & set(info.value.fields)
