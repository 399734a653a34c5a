"""Canonical example messages of the interface, and the document section built from them.

The examples in ``docs/iso8583-interface.md`` are generated here, from our
own codec: every request is encoded with :func:`encode_fields` and every
response is produced the way the gateway produces it (``decode_request`` ->
``respond``/``respond_bill`` -> ``encode``), so the document shows bytes the
gateway really sends and accepts.  A test compares the document's generated
region with :func:`render_examples_markdown`, so the two cannot drift.

Each example function returns ``(title, description, payload_bytes)``; the
payload is the ISO 8583 message without its length header.

The card number is ``4761739001010010``, a published Visa *test* PAN; no
example carries track data or a PIN block.

Regenerate the document region (run from outside the repository root, e.g.
``cd /tmp``, so our ``iso8583/`` folder does not shadow pyiso8583)::

    /work/main/.venv/bin/python -m billgw.iso8583.examples /work/main/docs/iso8583-interface.md
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from .bill_data import BillLine, BillPaid, BillRequestData, BillResponseData, to_ascii
from .codes import DEFAULT_CODES, Outcome
from .dump import annotate, hex_dump
from .messages import MessageFormatError, OriginalData, decode_request, encode_fields, format_error_response

TEST_PAN = "4761739001010010"  # public Visa test card number, not a real card
ACQUIRER_ID = "123456"
TERMINAL_ID = "ATM00001"
CARD_ACCEPTOR_ID = "BANK0000000001 "
TRANSMISSION_DATETIME = "0203140509"  # 3 February, 14:05:09 UTC
LOCAL_TIME = "170509"  # Amman, UTC+3
LOCAL_DATE = "0203"
CURRENCY_JOD = "400"
# IR and PR are the gateway's journal ids: opaque, 32 characters (hex).
INQUIRY_REFERENCE = "5c0f7e2a9d3b4e18a6c1f0b27d9e4a35"
PAYMENT_REFERENCE = "b81d4c6e07f2493a9e5d2c1a8f3b6e70"
# The reversal example is sent 31 s after the payment: the switch gave up
# waiting for the 0210 (F39 68 in the 0420 says so).
REVERSAL_DATETIME = "0203140540"
REVERSAL_LOCAL_TIME = "170540"

BEGIN_MARKER = "<!-- BEGIN GENERATED EXAMPLES -->"
END_MARKER = "<!-- END GENERATED EXAMPLES -->"

Example = tuple[str, str, bytes]


def _code(outcome: Outcome) -> str:
    return DEFAULT_CODES[outcome].code


def _network_request_fields(stan: str, code: str) -> dict[str, str]:
    return {"7": TRANSMISSION_DATETIME, "11": stan, "32": ACQUIRER_ID, "70": code}


def cut_over_request() -> Example:
    return (
        "0800 cut-over",
        "The switch closes its business day (F70 = 201), here naming the business date it opens "
        "in F15 (optional: without it, the day after the current one).",
        encode_fields("0800", {**_network_request_fields("000123", "201"), "15": "0204"}),
    )


def cut_over_response() -> Example:
    request = decode_request(cut_over_request()[2])
    return (
        "0810 cut-over accepted",
        "F39 = 00 once the new business date is journaled; F15 = the business date now open, "
        "for every payment from now on, on every connection.",
        request.respond(_code(Outcome.APPROVED), {"15": "0204"}).encode(),
    )


def _financial_fields(stan: str, processing_code: str, amount_minor: int, rrn: str,
                      bill: BillRequestData) -> dict[str, str]:
    return {
        "2": TEST_PAN,
        "3": processing_code,
        "4": f"{amount_minor:012d}",
        "7": TRANSMISSION_DATETIME,
        "11": stan,
        "12": LOCAL_TIME,
        "13": LOCAL_DATE,
        "18": "6011",
        "32": ACQUIRER_ID,
        "37": rrn,
        "41": TERMINAL_ID,
        "42": CARD_ACCEPTOR_ID,
        "48": bill.to_tlv(),
        "49": CURRENCY_JOD,
    }


def sign_on_request() -> Example:
    return (
        "0800 sign-on",
        "The switch signs on (F70 = 001) after connecting; until then a listener "
        "that requires sign-on refuses financial requests with response code 05.",
        encode_fields("0800", _network_request_fields("000121", "001")),
    )


def sign_on_response() -> Example:
    request = decode_request(sign_on_request()[2])
    return (
        "0810 sign-on accepted",
        "F7, F11, F32 and F70 are echoed; F39 = 00.",
        request.respond(_code(Outcome.APPROVED)).encode(),
    )


def echo_request() -> Example:
    return (
        "0800 echo test",
        "Either side's keep-alive (F70 = 301); it also resets the idle timer.",
        encode_fields("0800", _network_request_fields("000122", "301")),
    )


def echo_response() -> Example:
    request = decode_request(echo_request()[2])
    return ("0810 echo answer", "Echo of the test with F39 = 00.", request.respond(_code(Outcome.APPROVED)).encode())


_INQUIRY_BILL = BillRequestData(biller_code="TEL", service_code="MOBILE", billing_number="0791234567")
_PAYMENT_BILL = BillRequestData(
    biller_code="TEL",
    service_code="MOBILE",
    billing_number="0791234567",
    bill_number="2024-01",
    msisdn="962791234567",
    language="ar",
    inquiry_reference=INQUIRY_REFERENCE,
)


def inquiry_request() -> Example:
    return (
        "0200 bill inquiry",
        "Processing code 370000, F4 zero; F48 names the biller, service and billing number.",
        encode_fields("0200", _financial_fields("000124", "370000", 0, "403414000124", _INQUIRY_BILL)),
    )


def inquiry_response() -> Example:
    request = decode_request(inquiry_request()[2])
    bill = BillResponseData(
        customer_name="أحمد صالح",
        due_amount=12500,
        due_date="20240115",
        fee=250,
        bills=(BillLine("2024-01", 7500, "20240115"), BillLine("2024-02", 5000, "20240215")),
        inquiry_reference=INQUIRY_REFERENCE,
    )
    return (
        "0210 inquiry answer",
        "Customer name (UTF-8: the LLL length and the TLV lengths count bytes), total due "
        "12.500 JOD in minor units, due date of the oldest bill, fee 0.250 JOD, one BD tag "
        "per open bill, and the inquiry reference to quote in the payment.",
        request.respond_bill(_code(Outcome.APPROVED), bill=bill).encode(),
    )


def inquiry_response_ascii() -> Example:
    request = decode_request(inquiry_request()[2])
    utf8 = decode_request(inquiry_request()[2]).respond_bill(_code(Outcome.APPROVED), bill=BillResponseData(
        customer_name="أحمد صالح", due_amount=12500, due_date="20240115", fee=250,
        bills=(BillLine("2024-01", 7500, "20240115"), BillLine("2024-02", 5000, "20240215")),
        inquiry_reference=INQUIRY_REFERENCE))
    return (
        "0210 inquiry answer to an ASCII-only peer",
        "The same answer to a peer configured with `f48_encoding = \"ascii\"` (section 6.1): the "
        "customer name transliterated to ASCII, every byte of the message ASCII.",
        request.respond(utf8.response_code, {**utf8.fields, "48": to_ascii(utf8.fields["48"])}).encode(),
    )


def payment_request() -> Example:
    return (
        "0200 bill payment",
        "Processing code 500000, F4 = 12.500 JOD as 12500 minor units; F48 adds the bill "
        "number, the subscriber's MSISDN and language for the SMS receipt, and the inquiry reference.",
        encode_fields("0200", _financial_fields("000125", "500000", 12500, "403414000125", _PAYMENT_BILL)),
    )


def payment_approval() -> Example:
    request = decode_request(payment_request()[2])
    bill = BillResponseData(bill_number="2024-01", receipt_number="ORJ-778", payment_reference=PAYMENT_REFERENCE,
                            paid=(BillPaid("2024-01", 12500, 0),))
    return (
        "0210 payment approved",
        "F39 = 00 with the approval code (F38), the business date the payment settles on (F15), "
        "the bill it settled (BL, BP), the biller's receipt number (RN) and the gateway's payment "
        "reference (PR).",
        request.respond_bill(_code(Outcome.APPROVED), bill=bill, auth_code="004711",
                             settlement_date="0203").encode(),
    )


def payment_decline() -> Example:
    request = decode_request(payment_request()[2])
    code = _code(Outcome.INVALID_BILLING_NUMBER)
    return (
        f"0210 payment declined ({code})",
        f"The biller does not know the billing number: F39 = {code}, no F38, no F15, no F48.",
        request.respond_bill(code).encode(),
    )


def format_error_answer() -> Example:
    fields = _financial_fields("000126", "500000", 0, "403414000126", _PAYMENT_BILL)
    fields["4"] = "0000012.5000"  # a decimal point: F4 must be digits (minor units)
    bad = encode_fields("0200", fields)
    try:
        decode_request(bad)
    except MessageFormatError as error:
        response = format_error_response(error, _code(Outcome.FORMAT_ERROR))
    else:  # pragma: no cover - the codec accepted a non-numeric amount
        raise AssertionError("a non-numeric F4 was accepted")
    code = _code(Outcome.FORMAT_ERROR)
    return (
        f"0210 format error ({code})",
        f"Answer to a 0200 whose F4 was sent as `0000012.5000`: F39 = {code}, with the "
        "matching keys the request had (F7, F11, F32, F41, ...) so the switch can pair it; "
        "the field in error (here F4) is not echoed.",
        response.encode(),
    )


def advice_request() -> Example:
    fields = _financial_fields("000125", "500000", 12500, "403414000125", _PAYMENT_BILL)
    fields["39"] = _code(Outcome.LATE_RESPONSE)
    return (
        "0220 payment advice",
        "The switch debited the customer for the 0200 payment above but never got its 0210: "
        "the same fields and the same keys (F32, F41, F11, F7) as that 0200, with the switch's "
        f"reason in F39 ({fields['39']}, response too late).  A repeat is the same message with "
        "MTI 0221.",
        encode_fields("0220", fields),
    )


def advice_response() -> Example:
    request = decode_request(advice_request()[2])
    return (
        "0230 advice accepted",
        "F39 = 00 once the completion is durable; the 0210's echo fields and nothing else "
        "(no F15, F38 or F48).  A 0221 gets these same bytes.",
        request.respond_bill(_code(Outcome.APPROVED)).encode(),
    )


def reversal_request() -> Example:
    fields = _financial_fields("000127", "500000", 12500, "403414000125", _PAYMENT_BILL)
    for unused in ("2", "18", "42", "48"):  # optional in a 0420; the example shows the minimum plus F12/F13/F32
        del fields[unused]
    original = OriginalData(mti="0200", stan="000125", transmission_datetime=TRANSMISSION_DATETIME,
                            acquirer_id=ACQUIRER_ID, forwarder_id=None)
    fields.update({"7": REVERSAL_DATETIME, "12": REVERSAL_LOCAL_TIME, "39": _code(Outcome.LATE_RESPONSE),
                   "90": original.format()})
    return (
        "0420 reversal",
        "Instead of advising, the switch may undo the 0200 payment above: its own STAN (000127) and "
        "F7, the original's F3, F4 (the full amount), RRN (F37) and terminal (F41), and F90 = original "
        "MTI 0200, STAN 000125, F7 0203140509, acquirer 123456 zero-filled to 11 digits, no forwarder "
        "(11 zeros).  A repeat is the same message with MTI 0421.",
        encode_fields("0420", fields),
    )


def reversal_response() -> Example:
    request = decode_request(reversal_request()[2])
    return (
        "0430 reversal acknowledged",
        "F39 = 00 once the reversal is durable, whatever the original's state (even unknown), "
        "with the fields of the 0420 that a 0430 echoes (section 5.8: F3, F4, F7, F11, F12, F13, "
        "F32, F33, F37, F41, F49, F90, as the 0420 carried them) and no other: not the switch's "
        "reason in F39, nor F2 or F48.  A 0421 gets these same bytes.",
        request.respond(_code(Outcome.APPROVED)).encode(),
    )


EXAMPLES: tuple[Callable[[], Example], ...] = (
    sign_on_request,
    sign_on_response,
    echo_request,
    echo_response,
    cut_over_request,
    cut_over_response,
    inquiry_request,
    inquiry_response,
    inquiry_response_ascii,
    payment_request,
    payment_approval,
    payment_decline,
    format_error_answer,
    advice_request,
    advice_response,
    reversal_request,
    reversal_response,
)


def all_examples() -> list[Example]:
    return [make() for make in EXAMPLES]


def render_examples_markdown() -> str:
    """The document's generated region: per example a heading, the description,
    a ``hexdump`` block (the message without its length header) and the annotation."""
    parts = []
    for title, description, payload in all_examples():
        parts.append(
            f"### {title}\n\n{description}\n\n"
            f"{len(payload)} bytes; with the `binary2` header the frame starts "
            f"`{len(payload).to_bytes(2, 'big').hex(' ')}`, with `ascii4` it starts `{len(payload):04d}`.\n\n"
            f"```hexdump\n{hex_dump(payload)}\n```\n\n"
            f"```text\n{annotate(payload)}\n```\n"
        )
    return "\n".join(parts)


def replace_generated_region(document: str, generated: str) -> str:
    """``document`` with the text between the markers replaced by ``generated``."""
    start = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER, start)
    return document[:start] + "\n" + generated + "\n" + document[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated region of the interface document named in argv."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m billgw.iso8583.examples docs/iso8583-interface.md", file=sys.stderr)
        return 2
    path = Path(args[0])
    text = path.read_text(encoding="utf-8")
    path.write_text(replace_generated_region(text, render_examples_markdown()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
