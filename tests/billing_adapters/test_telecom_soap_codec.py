"""The SOAP codec and the adapter's answer interpretation, on bytes: no I/O."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from billgw.billing_adapters import soap
from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerOutcomeUnknown,
    DeclineReason,
    PaymentOrder,
)
from billing_adapters_helpers import BOMB, EXTERNAL_ENTITY, envelope
from billgw.billing_adapters.telecom_soap import (
    FAULT_REASONS,
    TELECOM_NS,
    decode_post_payment,
    encode_post_payment,
    fault_to_error,
    interpret_response,
)

ORDER = PaymentOrder(
    payment_id="GW-20240601-000042", biller_code="TELECOM", service_code="POSTPAID",
    billing_number="0791234567", bill_number=None, amount=12500, currency="400",
    paid_at="2024-06-01T10:15:00Z",
)


@pytest.mark.parametrize("data", [BOMB, EXTERNAL_ENTITY, b"not xml at all", b"<a><b></a>", b"",
                                  b"<Envelope><Body><x/></Body></Envelope>", envelope(""),
                                  b"<x>" + b" " * (soap.MAX_ENVELOPE_BYTES + 1) + b"</x>"])
def test_unusable_envelopes_are_refused(data):
    with pytest.raises(soap.SoapDecodeError):
        soap.parse_envelope(data)


def test_bomb_is_refused_as_hostile_not_expanded():
    with pytest.raises(soap.SoapDecodeError, match="hostile"):
        soap.parse_envelope(BOMB)


def test_post_payment_request_on_the_wire():
    data = soap.build_envelope(encode_post_payment(ORDER))
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    element = soap.parse_envelope(data)
    assert element.tag == f"{{{TELECOM_NS}}}PostPayment"
    fields = {soap.local_name(child.tag): child.text for child in element}
    # No BillNumber element when none is named: the biller picks the oldest bill.
    assert fields == {
        "PaymentId": "GW-20240601-000042", "SubscriberNumber": "0791234567", "Amount": "12500",
        "Currency": "400", "PaidAt": "2024-06-01T10:15:00Z", "Channel": "ATM",
    }


def test_fault_round_trip():
    fault = soap.SoapFault("Client", "too much", "INVALID_AMOUNT", "amount 20000 exceeds outstanding 12500")
    element = soap.parse_envelope(soap.build_fault_envelope(fault, TELECOM_NS))
    assert soap.parse_fault(element, TELECOM_NS) == fault


@pytest.mark.parametrize("code,reason", sorted(FAULT_REASONS.items()))
def test_documented_fault_codes_are_declines(code, reason):
    error = fault_to_error(soap.SoapFault("Client", "x", code, "m"))
    assert isinstance(error, BillerDeclined)
    assert error.reason is reason
    assert error.detail.startswith(code)


@pytest.mark.parametrize("code", ["INTERNAL", "SOMETHING_NEW", ""])
def test_internal_or_unexplained_faults_are_unknown_outcomes(code):
    assert isinstance(fault_to_error(soap.SoapFault("Server", "x", code)), BillerOutcomeUnknown)


RESPONSE = envelope(
    "<tb:PostPaymentResponse><tb:PaymentId>GW-1</tb:PaymentId><tb:ReceiptNumber>TR1</tb:ReceiptNumber>"
    "<tb:BillNumber>B1</tb:BillNumber><tb:AmountPosted>500</tb:AmountPosted></tb:PostPaymentResponse>"
)


def test_good_answer_is_decoded():
    confirmation = interpret_response(200, RESPONSE, lambda e: decode_post_payment(e, "GW-1"))
    assert (confirmation.receipt_number, confirmation.amount, confirmation.bill_number) == ("TR1", 500, "B1")


def test_answer_about_another_payment_is_never_a_confirmation():
    with pytest.raises(BillerOutcomeUnknown, match="PaymentId"):
        interpret_response(200, RESPONSE, lambda e: decode_post_payment(e, "GW-2"))


@pytest.mark.parametrize("code,data", [
    (500, b"<html>Internal Server Error</html>"),
    (502, b""),
    (200, b"<soap:Envelope><<<"),
    (200, envelope("<tb:PostPaymentResponse><tb:PaymentId>GW-1</tb:PaymentId></tb:PostPaymentResponse>")),
    (200, BOMB),
    (503, RESPONSE),
])
def test_unusable_answers_are_unknown_outcomes(code, data):
    with pytest.raises(BillerOutcomeUnknown):
        interpret_response(code, data, lambda e: decode_post_payment(e, "GW-1"))


def test_http_4xx_without_soap_is_a_decline():
    with pytest.raises(BillerDeclined) as info:
        interpret_response(404, b"<html>No Such Resource</html>", lambda e: e)
    assert info.value.reason is DeclineReason.OTHER


def test_fault_with_http_200_still_counts_as_fault():
    data = soap.build_fault_envelope(soap.SoapFault("Client", "x", "NO_BILL_DUE"), TELECOM_NS)
    with pytest.raises(BillerDeclined) as info:
        interpret_response(200, data, lambda e: ET.Element("unused"))
    assert info.value.reason is DeclineReason.NO_BILL_DUE
