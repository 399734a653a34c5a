"""The receipt's MSISDN is judged before the payment is posted: normalised to
E.164 (Arabic-Indic digits included), or -- when invalid -- the payment is
declined with its own response code, or (configured) paid without a receipt
and that recorded; an advice is never declined for its number."""
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.msisdn_policy import INVALID_MARK, MsisdnVerdict, judge_msisdn
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.receipts import ReceiptComposer
from billgw.gateway.schema import transactions
from billgw.iso8583.codes import Outcome, ResponseCodes
from billgw.sms.outbox import sms_outbox

from test_processor import TEST_PAN, MemoryBiller, request, rows


@pytest.mark.parametrize("raw, payment, advice, policy, expected", [
    ("0791234567", True, False, "decline", MsisdnVerdict("962791234567")),
    ("٠٧٩١٢٣٤٥٦٧", True, False, "decline", MsisdnVerdict("962791234567")),
    (None, True, False, "decline", MsisdnVerdict(None)),
    ("000000", True, False, "decline", MsisdnVerdict(None, Outcome.INVALID_MSISDN, "x")),
    ("000000", True, False, "pay_without_sms", MsisdnVerdict(INVALID_MARK, None, "x")),
    ("000000", True, True, "decline", MsisdnVerdict(INVALID_MARK, None, "x")),   # advice: never declined
    ("000000", False, False, "decline", MsisdnVerdict(None, None, "x")),         # inquiry: no SMS
])
def test_verdicts(raw, payment, advice, policy, expected):
    verdict = judge_msisdn(raw, country="JO", policy=policy, payment=payment, advice=advice)
    assert (verdict.msisdn, verdict.problem, verdict.reason is not None) == (
        expected.msisdn, expected.problem, expected.reason is not None)
    if verdict.reason:
        assert raw not in verdict.reason  # the number itself is never repeated in logs


def _processor(sync_pool, policy):
    settings = load_settings(environ={})
    biller = MemoryBiller()
    clock = Clock()
    clock.advance(1795375800)
    processor = TransactionProcessor(
        journal=Journal(sync_pool), billers={"TEL": BillerRoute(settings.billers["TEL"], biller)},
        codes=ResponseCodes(), clock=clock,
        receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates),
        sms_country="JO", invalid_msisdn=policy)
    return processor, biller


@pytest_twisted.ensureDeferred
async def test_an_invalid_number_declines_the_payment_before_the_biller_is_called(sync_pool):
    processor, biller = _processor(sync_pool, "decline")
    response = await processor.handle(request(msisdn="000000"))
    assert response.fields["39"] == "30"
    assert biller.pay_calls == []
    [txn] = rows(sync_pool.engine, transactions)
    assert (txn.state, txn.local_problem, txn.msisdn) == ("DECLINED", "invalid_msisdn", None)
    assert rows(sync_pool.engine, sms_outbox) == []


@pytest_twisted.ensureDeferred
async def test_pay_without_sms_posts_the_payment_and_records_that_no_receipt_goes(sync_pool):
    processor, biller = _processor(sync_pool, "pay_without_sms")
    response = await processor.handle(request(msisdn="000000"))
    assert response.fields["39"] == "00" and len(biller.pay_calls) == 1
    [txn] = rows(sync_pool.engine, transactions)
    assert (txn.state, txn.msisdn) == ("CONFIRMED", INVALID_MARK)  # recorded: a number came, unusable
    assert rows(sync_pool.engine, sms_outbox) == []


@pytest_twisted.ensureDeferred
async def test_arabic_indic_digits_are_posted_and_receipted_to_the_e164_number(sync_pool):
    processor, _ = _processor(sync_pool, "decline")
    response = await processor.handle(request(msisdn="٠٧٩١٢٣٤٥٦٧"))
    assert response.fields["39"] == "00"
    [txn] = rows(sync_pool.engine, transactions)
    [sms] = rows(sync_pool.engine, sms_outbox)
    assert txn.msisdn == sms.msisdn == "962791234567"


@pytest_twisted.ensureDeferred
async def test_an_advice_with_an_invalid_number_is_still_completed(sync_pool):
    processor, biller = _processor(sync_pool, "decline")
    response = await processor.handle(_advice(msisdn="000000"))
    assert response.fields["39"] == "00"
    [txn] = rows(sync_pool.engine, transactions)
    # Acknowledged and left to the biller worker to post (not declined, no local problem).
    assert (txn.local_problem, txn.msisdn) == (None, INVALID_MARK) and txn.state != "DECLINED"


def _advice(**kw):
    from billgw.iso8583.bill_data import BillRequestData
    from billgw.iso8583.messages import decode_request, encode_fields


    fields = {
        "2": TEST_PAN, "3": "500000", "4": f"{12500:012d}", "7": "1122193000", "11": "000777", "12": "193000",
        "13": "1122", "32": "123456", "37": "632619000777", "41": "ATM00001", "49": "400",
        "48": BillRequestData("TEL", "MOBILE", "0791234567", msisdn=kw["msisdn"], language="en").to_tlv(),
    }
    return decode_request(encode_fields("0220", fields))
