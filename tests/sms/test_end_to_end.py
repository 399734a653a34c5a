"""OutboxSender + SmppLink + SMSC simulator + a SQLite file database, over
real loopback sockets, with the DB work on a bounded one-thread pool as the
gateway does it."""
import datetime as dt

import pytest
import pytest_twisted
from sqlalchemy import create_engine, select
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, sms_outbox
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import LinkState
from billgw.sms.smsc_sim import ErrorOnSubmitSMSC
from billgw.sms.templates import ReceiptData, render_receipt

# A deployment's long Arabic receipt (every detail spelt out): several UCS-2 parts.
LONG_TEMPLATES = {
    "en": "Paid {amount} {currency_code} to {biller_name}. Ref {reference}.",
    "ar": (
        "تم دفع {amount} {currency_code} إلى {biller_name}، رقم الاشتراك {billing_number}، "
        "الفاتورة {bill_number}. العمولة {fee} {currency_code}. {date}، البطاقة {card}. "
        "رقم الإيصال {receipt_number}، المرجع {reference}."
    ),
}

pytestmark = pytest.mark.timeout(30)
TIMEOUT = 10.0
MSISDN = "962791234567"
RECEIPT = ReceiptData(
    "Orange Jordan", "أورانج الأردن", "0791234567", None, 25000, "400", 3, "JOD", 350,
    dt.datetime(2024, 3, 1, 10, 0), "ORJ-1", "PAY-42", "476173******0010",
)


@pytest.fixture
def db(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    outbox.metadata.create_all(engine)
    pool = ThreadPool(minthreads=1, maxthreads=1, name="test-db")
    pool.start()
    from twisted.internet import reactor

    def in_transaction(fn, *args):
        with engine.begin() as conn:
            return fn(conn, *args)

    def run_in_db(fn, *args):
        return deferToThreadPool(reactor, pool, in_transaction, fn, *args)

    yield engine, run_in_db
    pool.stop()
    engine.dispose()


def enqueue(engine, reactor, text, payment_id="PAY-42"):
    with engine.begin() as conn:
        return outbox.enqueue(
            conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn=MSISDN,
            language="ar", text=text, now=reactor.seconds(),
        )


def row(engine, row_id):
    with engine.begin() as conn:
        return conn.execute(select(sms_outbox).where(sms_outbox.c.id == row_id)).one()


def ids(engine, row_id):
    with engine.begin() as conn:
        return outbox.message_ids(conn, row_id)


def start_sender(reactor, run_in_db, link, **kwargs):
    sender = OutboxSender(
        run_in_db=run_in_db, link=link, clock=reactor, owner="e2e-1", poll_interval=3600.0,
        batch_size=10, lease_seconds=60.0, max_attempts=5, retry_base=30.0, retry_cap=600.0, **kwargs,
    )
    sender.startService()
    return sender


@pytest_twisted.inlineCallbacks
def test_queued_arabic_receipt_becomes_sent_with_the_smsc_message_ids(
    reactor, db, smsc_factory, make_link, tmp_path
):
    engine, run_in_db = db
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    text = render_receipt("ar", RECEIPT, LONG_TEMPLATES)
    row_id = enqueue(engine, reactor, text)
    sender = start_sender(reactor, run_in_db, link)
    try:
        yield sender.wake().addTimeout(TIMEOUT, reactor)  # as the gateway does after commit
    finally:
        yield sender.stopService()
    r = row(engine, row_id)
    [m] = smsc.messages_received
    assert (m.text, m.data_coding, m.destination_addr) == (text, 8, MSISDN)
    assert (r.state, r.attempts, r.parts, r.data_coding) == ("SENT", 1, m.parts, 8)
    assert ids(engine, row_id) == m.message_ids and m.parts >= 2
    # And what a person reads in the simulator's record (written off the reactor thread):
    yield smsc.wait_for_records().addTimeout(TIMEOUT, reactor)
    record = (tmp_path / "smsc-received.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(record) == 1 and text in record[0]


@pytest_twisted.inlineCallbacks
def test_throttled_submit_leaves_the_row_failed_with_a_retry_time(reactor, db, smsc_factory, make_link):
    engine, run_in_db = db
    port, smsc = yield smsc_factory(ErrorOnSubmitSMSC, error_status=0x58)
    link = make_link(port.getHost().port)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    row_id = enqueue(engine, reactor, render_receipt("en", RECEIPT))
    sender = start_sender(reactor, run_in_db, link)
    try:
        yield sender.wake().addTimeout(TIMEOUT, reactor)
    finally:
        yield sender.stopService()
    r = row(engine, row_id)
    assert (r.state, r.attempts, ids(engine, row_id)) == ("FAILED", 1, [])
    assert "0x00000058" in r.last_error
    assert abs((r.next_attempt_at - r.updated_at) - dt.timedelta(seconds=30)) < dt.timedelta(milliseconds=1)
    assert smsc.submits_received == 1 and smsc.messages_received == []
