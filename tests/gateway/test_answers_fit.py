"""Every request gets an answer that can be put on the wire, and the state
committed is the state of that answer.

Tried from outside: 30 open bills built an F48 of 1,104 bytes that could not
be encoded (journal ANSWERED, switch: nothing); a 990-character receipt
number left a payment CONFIRMED whose switch never got its 0210; a
1,200-character bill number got 96 and the row sat unfinished; an account
with nothing due was answered 00 with DA=0."""
import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.billing_adapters.interface import Bill, BillerCapabilities, BillInquiryResult, PaymentConfirmation
from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.receipts import ReceiptComposer
from billgw.gateway.schema import transactions
from billgw.iso8583.bill_data import F48_MAX_BYTES, BillLine, BillRequestData, BillResponseData, fit_bills
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.messages import decode_request, decode_response, encode_fields

TEST_PAN = "4761739001010010"


class ScriptedBiller:
    capabilities = BillerCapabilities()

    def __init__(self):
        self.bills = (Bill("B-1", 12500, "20261101", "400"),)
        self.receipt = "RCPT-1"
        self.bill_number = "B-1"

    def inquire(self, query):
        return defer.succeed(BillInquiryResult(query.billing_number, "Layla Haddad", self.bills))

    def pay(self, order):
        return defer.succeed(PaymentConfirmation(order.payment_id, self.receipt, order.amount, self.bill_number))


@pytest.fixture
def setup(sync_pool):
    settings = load_settings(environ={})
    biller = ScriptedBiller()
    clock = Clock()
    clock.advance(1795375800)
    processor = TransactionProcessor(
        journal=Journal(sync_pool), billers={"TEL": BillerRoute(settings.billers["TEL"], biller)},
        codes=ResponseCodes(), clock=clock,
        receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates))
    return processor, biller, sync_pool.engine


def request(kind="pay", amount=12500):
    fields = {"2": TEST_PAN, "3": "500000" if kind == "pay" else "370000", "4": f"{amount:012d}",
              "7": "1122193000", "11": "000123", "12": "193000", "13": "1122", "32": "123456",
              "37": "632619000123", "41": "ATM00001", "49": "400",
              "48": BillRequestData("TEL", "MOBILE", "0791234567", msisdn="962791234567").to_tlv()}
    return decode_request(encode_fields("0200", fields))


def on_the_wire(response):
    """What the switch receives: the answer encoded and decoded again."""
    return decode_response(response.encode())


def row(engine):
    with engine.connect() as conn:
        [txn] = conn.execute(select(transactions)).all()
    return txn


def test_fitting_keeps_the_oldest_bills_and_counts_the_others():
    bills = tuple(BillLine(f"TB-2026-{i:06d}", 1000 + i, f"2026{1 + i % 12:02d}01") for i in range(30))
    data = BillResponseData(customer_name="ليلى حداد" * 6, due_amount=40000, due_date="20260101", fee=250,
                            bills=bills, inquiry_reference="r" * 32)
    assert data.size() > F48_MAX_BYTES
    fitted = fit_bills(data)
    assert fitted.size() <= F48_MAX_BYTES
    kept = len(fitted.bills)
    assert fitted.bills == bills[:kept] and fitted.more_bills == 30 - kept > 0
    assert BillResponseData.from_tlv(fitted.to_tlv()) == fitted
    assert fit_bills(fitted) == fitted  # what fits is left alone
    small = BillResponseData(bills=bills[:2])
    assert fit_bills(small) is small and small.more_bills is None


@pytest_twisted.ensureDeferred
async def test_an_inquiry_for_thirty_open_bills_is_answered_within_the_f48_budget(setup):
    processor, biller, engine = setup
    biller.bills = tuple(Bill(f"TB-2026-{i:06d}", 1000, f"2026{1 + i % 12:02d}{1 + i // 12:02d}", "400")
                         for i in range(30))
    answer = on_the_wire(await processor.handle(request("inq", 0)))
    assert answer.response_code == "00"
    assert answer.bill.due_amount == 30_000  # all of them are due
    assert len(answer.bill.bills) + answer.bill.more_bills == 30
    dates = [b.due_date for b in answer.bill.bills]
    assert dates == sorted(dates)  # the oldest are the ones listed
    assert row(engine).state == "ANSWERED"


@pytest_twisted.ensureDeferred
async def test_an_account_with_nothing_due_is_answered_88(setup):
    processor, biller, engine = setup
    biller.bills = ()
    answer = on_the_wire(await processor.handle(request("inq", 0)))
    assert (answer.response_code, answer.bill) == ("88", None)
    assert row(engine).state == "DECLINED"


@pytest_twisted.ensureDeferred
async def test_an_inquiry_whose_bill_number_cannot_travel_is_96_and_finished(setup):
    processor, biller, engine = setup
    biller.bills = (Bill("B" * 1200, 1000, "20261101", "400"),)
    answer = on_the_wire(await processor.handle(request("inq", 0)))
    assert answer.response_code == "96"
    txn = row(engine)
    assert txn.state == "DECLINED" and "bill number of 1200 characters" in txn.detail


@pytest.mark.parametrize("receipt, bill_number, why", [
    ("R" * 990, "B-1", "receipt number of 990 characters"),
    ("RCPT-1", "B" * 1200, "bill number of 1200 characters"),
    ("", "B-1", "no receipt number"),
    ("RCPT\x1b[2J", "B-1", "control characters"),
])
@pytest_twisted.ensureDeferred
async def test_a_confirmation_that_cannot_travel_is_in_doubt_never_a_silent_confirmed(
        setup, receipt, bill_number, why):
    processor, biller, engine = setup
    biller.receipt, biller.bill_number = receipt, bill_number
    answer = on_the_wire(await processor.handle(request()))
    assert answer.response_code == "91" and "38" not in answer.fields
    txn = row(engine)
    assert txn.state == "IN_DOUBT" and why in txn.detail  # settled by status query, then reversal
    assert txn.biller_receipt is None
