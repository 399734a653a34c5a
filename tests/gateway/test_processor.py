"""The processor's money rules against a real journal (SQLite, and PostgreSQL
when configured) and an in-memory biller, with an injected Clock."""
import json

import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.billing_adapters.interface import (
    Bill,
    BillerCapabilities,
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillInquiryResult,
    DeclineReason,
    PaymentConfirmation,
)
from billgw.gateway import journal as journal_ops
from billgw.gateway.config import load_settings
from billgw.gateway.journal import Journal
from billgw.gateway.processor import BillerRoute, TransactionProcessor
from billgw.gateway.receipts import ReceiptComposer
from billgw.gateway.schema import transaction_events, transactions
from billgw.gateway.states import State
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.codes import ResponseCodes
from billgw.iso8583.messages import decode_request, encode_fields
from billgw.sms.outbox import sms_outbox

TEST_PAN = "4761739001010010"


class MemoryBiller:
    """An in-memory biller whose answers a test scripts."""

    capabilities = BillerCapabilities()

    def __init__(self):
        self.postings = {}
        self.pay_calls = []
        self.hold = None  # a Deferred to return from pay() instead of answering
        self.fail_with = None

    def inquire(self, query):
        if query.billing_number == "0780000000":
            return defer.fail(BillerDeclined(DeclineReason.UNKNOWN_BILLING_NUMBER))
        return defer.succeed(BillInquiryResult(query.billing_number, "Layla Haddad", (
            Bill("B-2", 7000, "20261201", "400"), Bill("B-1", 12500, "20261101", "400"))))

    def pay(self, order):
        self.pay_calls.append(order)
        if self.fail_with is not None:
            return defer.fail(self.fail_with)
        if self.hold is not None:
            return self.hold
        self.postings.setdefault(order.payment_id, order)
        return defer.succeed(PaymentConfirmation(order.payment_id, "RCPT-1", order.amount, "B-1"))

    def status(self, payment_id):
        raise NotImplementedError

    def reverse(self, payment_id):
        raise NotImplementedError


def request(kind="pay", stan="000123", amount=12500, billing="0791234567", msisdn="962791234567",
            language="en", **over):
    fields = {
        "2": TEST_PAN, "3": "500000" if kind == "pay" else "370000", "4": f"{amount:012d}",
        "7": "1122193000", "11": stan, "12": "193000", "13": "1122", "32": "123456",
        "37": "632619000123", "41": "ATM00001", "49": "400",
        "48": BillRequestData("TEL", "MOBILE", billing, msisdn=msisdn, language=language).to_tlv(),
    }
    fields.update(over)
    return decode_request(encode_fields("0200", fields))


@pytest.fixture
def setup(sync_pool):
    settings = load_settings(environ={})
    biller = MemoryBiller()
    clock = Clock()
    clock.advance(1795375800)  # 2026-11-22T19:30:00Z
    queued = []
    processor = TransactionProcessor(
        journal=Journal(sync_pool),
        billers={"TEL": BillerRoute(settings.billers["TEL"], biller)},
        codes=ResponseCodes(), clock=clock,
        receipts=ReceiptComposer(settings.sms.receipt_templates, settings.sms.reversal_templates),
        on_sms_queued=lambda: queued.append(1), new_auth=lambda: "654321",
    )
    return processor, biller, clock, sync_pool.engine, queued


def rows(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(table)).all()


@pytest_twisted.ensureDeferred
async def test_payment_confirmed_journaled_and_sms_queued_together(setup):
    processor, biller, _, engine, queued = setup
    response = await processor.handle(request())
    assert response.mti == "0210"
    assert response.fields["39"] == "00"
    assert response.fields["38"] == "654321"
    assert response.fields["15"] == "1122"
    assert response.fields["4"] == "000000012500"
    [txn] = rows(engine, transactions)
    assert (txn.state, txn.amount, txn.masked_pan, txn.biller_receipt) == (
        "CONFIRMED", 12500, "476173******0010", "RCPT-1")
    assert json.loads(txn.response_fields)["fields"]["39"] == "00"
    # Journaled POSTING at once: the biller is called right after that commit.
    assert [(e.from_state, e.to_state) for e in rows(engine, transaction_events)] == [
        (None, "POSTING"), ("POSTING", "CONFIRMED")]
    [sms] = rows(engine, sms_outbox)
    assert sms.payment_id == txn.id and sms.state == "QUEUED" and sms.msisdn == "962791234567"
    assert "12.500 JOD" in sms.text and "****0010" in sms.text and TEST_PAN not in sms.text
    assert queued == [1]
    [order] = biller.pay_calls
    assert order.payment_id == txn.id and order.amount == 12500


@pytest_twisted.ensureDeferred
async def test_arabic_receipt_text(setup):
    processor, _, _, engine, _ = setup
    await processor.handle(request(language="ar"))
    [sms] = rows(engine, sms_outbox)
    assert sms.language == "ar"
    assert sms.text.startswith("دفع 12.500 JOD")


@pytest_twisted.ensureDeferred
async def test_repeat_gets_original_answer_and_no_second_posting(setup):
    processor, biller, _, engine, _ = setup
    first = await processor.handle(request())
    second = await processor.handle(request())
    assert second.fields == first.fields
    assert len(biller.pay_calls) == 1
    assert len(rows(engine, transactions)) == 1
    assert len(rows(engine, sms_outbox)) == 1


@pytest_twisted.ensureDeferred
async def test_repeat_while_first_in_flight_waits_for_it(setup):
    processor, biller, _, engine, _ = setup
    biller.hold = defer.Deferred()
    d1 = processor.handle(request())
    d2 = processor.handle(request())
    assert not d1.called and not d2.called
    assert len(biller.pay_calls) == 1
    order = biller.pay_calls[0]
    biller.hold.callback(PaymentConfirmation(order.payment_id, "RCPT-9", 12500))
    first, second = await d1, await d2
    assert first.fields["39"] == second.fields["39"] == "00"
    assert first.fields == second.fields
    assert len(biller.pay_calls) == 1


@pytest_twisted.ensureDeferred
async def test_same_keys_other_amount_is_duplicate_transmission(setup):
    processor, biller, _, _, _ = setup
    await processor.handle(request())
    clash = await processor.handle(request(amount=999))
    assert clash.fields["39"] == "94"
    assert len(biller.pay_calls) == 1


@pytest_twisted.ensureDeferred
async def test_biller_timeout_leaves_payment_in_doubt_and_answers_91(setup):
    processor, biller, clock, engine, queued = setup
    cancelled = []
    biller.hold = defer.Deferred(lambda d: cancelled.append(True))
    d = processor.handle(request())
    clock.advance(9.9)
    assert not d.called
    clock.advance(0.2)  # biller timeout is 10 s in conf
    response = await d
    assert response.fields["39"] == "91"
    assert cancelled == [True]
    [txn] = rows(engine, transactions)
    assert txn.state == State.IN_DOUBT.value
    assert rows(engine, sms_outbox) == []
    assert queued == []


@pytest.mark.parametrize("error, state, code", [
    (BillerDeclined(DeclineReason.BILL_ALREADY_PAID), "DECLINED", "54"),
    (BillerDeclined(DeclineReason.INVALID_AMOUNT), "DECLINED", "13"),
    (BillerDeclined(DeclineReason.UNKNOWN_BILLING_NUMBER), "DECLINED", "14"),
    (BillerUnavailable("connection refused"), "DECLINED", "91"),
    (BillerOutcomeUnknown("connection lost"), "IN_DOUBT", "91"),
])
@pytest_twisted.ensureDeferred
async def test_biller_failures_map_to_states_and_codes(setup, error, state, code):
    processor, biller, _, engine, _ = setup
    biller.fail_with = error
    response = await processor.handle(request())
    assert response.fields["39"] == code
    assert "38" not in response.fields
    [txn] = rows(engine, transactions)
    assert (txn.state, txn.response_code) == (state, code)
    assert rows(engine, sms_outbox) == []


@pytest.mark.allow_errors
@pytest_twisted.ensureDeferred
async def test_unexpected_adapter_error_is_96_and_in_doubt(setup):
    processor, biller, _, engine, _ = setup
    biller.fail_with = ZeroDivisionError("bug")
    response = await processor.handle(request())
    assert response.fields["39"] == "96"
    [txn] = rows(engine, transactions)
    assert txn.state == "IN_DOUBT"


@pytest.mark.parametrize("req, code", [
    (lambda: request(billing="12345"), "14"),  # billing-number pattern
    (lambda: request(amount=50), "13"),  # below min_amount
    (lambda: request(amount=6_000_000), "13"),  # above max_amount
    (lambda: request(**{"49": "978"}), "12"),  # wrong currency for the service
    (lambda: request(**{"48": BillRequestData("XXX", "MOBILE", "0791234567").to_tlv()}), "12"),
])
@pytest_twisted.ensureDeferred
async def test_local_checks_decline_before_the_biller(setup, req, code):
    processor, biller, _, engine, _ = setup
    response = await processor.handle(req())
    assert response.fields["39"] == code
    assert biller.pay_calls == []
    [txn] = rows(engine, transactions)
    assert txn.state == "DECLINED"


@pytest_twisted.ensureDeferred
async def test_inquiry_answers_bills_oldest_first(setup):
    processor, biller, _, engine, _ = setup
    response = await processor.handle(request(kind="inq", amount=0))
    from billgw.iso8583.bill_data import BillResponseData

    data = BillResponseData.from_tlv(response.fields["48"])
    assert response.fields["39"] == "00"
    assert data.customer_name == "Layla Haddad"
    assert data.due_amount == 19500
    assert data.due_date == "20261101"
    assert [b.bill_number for b in data.bills] == ["B-1", "B-2"]
    [txn] = rows(engine, transactions)
    assert txn.state == "ANSWERED" and data.inquiry_reference == txn.id
    assert biller.pay_calls == []


@pytest_twisted.ensureDeferred
async def test_inquiry_unknown_subscriber(setup):
    processor, _, _, _, _ = setup
    response = await processor.handle(request(kind="inq", amount=0, billing="0780000000"))
    assert response.fields["39"] == "14"


def test_confirmation_and_sms_are_one_transaction(engine, setup):
    """If the SMS row cannot be written, the payment is not CONFIRMED either."""
    from billgw.gateway import settle
    from billgw.gateway.journal import NewTransaction
    from billgw.gateway.machine import Event

    new = NewTransaction(
        id="p1", kind="payment", mti="0200", processing_code="500000", acquirer_id="1",
        forwarder_id=None, terminal_id="T1", stan="000001", transmission_dt="1122193000",
        rrn="1", fingerprint="f", masked_pan=None, amount=1, currency="400", fee=0,
        biller_code="TEL", service_code="MOBILE", billing_number="1", bill_number=None,
        msisdn="962791234567", language="en")
    with engine.begin() as conn:
        journal_ops.record_received(conn, new, 1.0, state=State.POSTING)

    def broken_template(view, kind):
        raise KeyError("template")

    ctx = settle.SettleContext(can_reverse=lambda code: True, sms_text=broken_template)
    with pytest.raises(KeyError):
        with engine.begin() as conn:
            settle.apply_event(conn, "p1", Event.BILLER_CONFIRMED, 3.0, ctx,
                               respond=lambda state: ("0210", {"39": "00"}))
    with engine.connect() as conn:
        assert journal_ops.get(conn, "p1").state == State.POSTING
        assert conn.execute(select(func.count()).select_from(sms_outbox)).scalar() == 0


@pytest_twisted.ensureDeferred
async def test_an_approved_payment_costs_two_journal_transactions(setup):
    """Durable before the biller is called, durable again (CONFIRMED with
    its SMS row) before the 0210 goes out -- and nothing else on the way."""
    processor, biller, _, engine, _ = setup
    journal_pool = processor._journal._pool
    inner, calls = journal_pool.run, []

    def counting(fn, *args, **kwargs):
        calls.append(fn.__name__)
        return inner(fn, *args, **kwargs)

    journal_pool.run = counting
    response = await processor.handle(request())
    assert response.fields["39"] == "00"
    assert calls == ["record_request", "apply_event"]


@pytest_twisted.ensureDeferred
async def test_the_approved_path_runs_a_handful_of_statements(setup):
    """What the journal costs a payment, counted where it is paid: SQL
    statements sent to the database.  Journaling the 0200: BEGIN, look up
    its keys, look for a reversal that came first, SAVEPOINT, INSERT the
    row and its event (RETURNING: no re-read), RELEASE; confirming it:
    BEGIN, read the row (FOR UPDATE on PostgreSQL), INSERT the event,
    UPDATE ... RETURNING, INSERT the SMS row.  (29 before the journal work.)"""
    from sqlalchemy import event

    processor, _, _, engine, _ = setup
    statements = []
    listener = lambda conn, cursor, statement, *rest: statements.append(statement.split()[0])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        response = await processor.handle(request())
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert response.fields["39"] == "00"
    assert len(statements) <= 13, statements


@pytest_twisted.ensureDeferred
async def test_a_full_journal_queue_answers_busy_and_writes_nothing(setup):
    """Back-pressure in front of the writer: a 0200 the journal cannot admit
    gets 91 at once, with its echo fields, and leaves no row behind."""
    from billgw.gateway.db import JournalBusy

    processor, biller, _, engine, _ = setup
    processor._journal._pool.admit = lambda fn, *a, **k: defer.fail(JournalBusy("queue full"))
    response = await processor.handle(request())
    assert (response.mti, response.fields["39"], response.fields["11"]) == ("0210", "91", "000123")
    assert rows(engine, transactions) == []
    assert biller.pay_calls == []
