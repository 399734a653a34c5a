"""The whole SMS side -- OutboxSender + SmppLink + a misbehaving SMSC simulator
over real loopback sockets, a SQLite file journal on a one-thread pool --
against receipts of one and several parts: each subscriber gets exactly one
receipt, whole, except in the documented ambiguous case (UNCERTAIN, never
resent)."""
import collections
import datetime as dt

import pytest
import pytest_twisted
from sqlalchemy import create_engine, select
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, sms_outbox
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import LinkState
from billgw.sms.smsc_sim import (
    DropMidWindowSMSC,
    NoResponseOnSubmitSMSC,
    RefuseBindSMSC,
    SlowSMSC,
    ThrottleEveryNthSMSC,
)
from billgw.sms.templates import ReceiptData, render_receipt

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 10.0
MSISDN = "962791234567"


# A deployment's long receipts: the Arabic one is UCS-2 in several parts, so
# that throttles and drops fall in the middle of messages too.
LONG_TEMPLATES = {
    "en": "Paid {amount} {currency_code} to {biller_name}, account {billing_number}. Ref {reference}.",
    "ar": ("تم دفع {amount} {currency_code} إلى {biller_name}، رقم الاشتراك {billing_number}، "
           "الفاتورة {bill_number}. العمولة {fee} {currency_code}. {date}، البطاقة {card}. "
           "رقم الإيصال {receipt_number}، المرجع {reference}."),
}


def receipt_text(n: int) -> str:
    language = "ar" if n % 3 == 0 else "en"  # Arabic ones are UCS-2 and several parts
    data = ReceiptData("Orange Jordan", "أورانج الأردن", "0791234567", None, 25000 + n, "400", 3, "JOD", 350,
                       dt.datetime(2024, 3, 1, 10, 0), f"ORJ-{n}", f"PAY-{n:05d}", "476173******0010")
    return render_receipt(language, data, LONG_TEMPLATES)


@pytest.fixture
def db(tmp_path, reactor):
    engine = create_engine(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    outbox.metadata.create_all(engine)
    pool = ThreadPool(minthreads=1, maxthreads=1, name="test-db")
    pool.start()

    def in_transaction(fn, *args):
        with engine.begin() as conn:
            return fn(conn, *args)

    def run_in_db(fn, *args):
        return deferToThreadPool(reactor, pool, in_transaction, fn, *args)

    yield engine, run_in_db
    pool.stop()
    engine.dispose()


def enqueue_all(engine, reactor, count):
    texts = {}
    with engine.begin() as conn:
        for n in range(count):
            texts[f"PAY-{n:05d}"] = text = receipt_text(n)
            outbox.enqueue(conn, payment_id=f"PAY-{n:05d}", kind=OutboxKind.RECEIPT, msisdn=MSISDN,
                           language="ar", text=text, now=reactor.seconds())
    return texts


def states(engine):
    with engine.connect() as conn:
        return {r.payment_id: r for r in conn.execute(select(sms_outbox))}


@defer.inlineCallbacks
def drain(reactor, engine, sender, deadline=30.0):
    """Wake the sender until no receipt is left to send (bounded)."""
    end = reactor.seconds() + deadline
    while True:
        yield sender.wake().addTimeout(TIMEOUT, reactor)
        left = [r for r in states(engine).values() if r.state in ("QUEUED", "FAILED", "SENDING")]
        if not left:
            return
        assert reactor.seconds() < end, f"{len(left)} receipts still to send"
        yield task.deferLater(reactor, 0.02, lambda: None)


def start_sender(reactor, run_in_db, link):
    sender = OutboxSender(run_in_db=run_in_db, link=link, clock=reactor, owner="t-1", poll_interval=3600.0,
                          batch_size=20, lease_seconds=30.0, max_attempts=20, retry_base=0.02, retry_cap=0.2)
    sender.startService()
    return sender


def received_by_payment(smsc, texts):
    by_text = collections.Counter(m.text for m in smsc.messages_received)
    return {pid: by_text[text] for pid, text in texts.items()}


@pytest.mark.parametrize("n, status, scheme", [
    (5, 0x58, "udh8"),    # throttled every 5th
    (7, 0x14, "udh16"),   # queue full every 7th
    (6, 0x58, "sar"),     # throttled, parts joined by SAR TLVs
])
@pytest_twisted.inlineCallbacks
def test_throttling_every_fifth_submit_still_delivers_each_receipt_once_and_whole(
        reactor, db, smsc_factory, make_link, n, status, scheme):
    engine, run_in_db = db
    port, smsc = yield smsc_factory(ThrottleEveryNthSMSC, n=n, error_status=status)
    link = make_link(port.getHost().port, window=10, throttle_pause=0.01, throttle_pause_cap=0.05,
                     concatenation=scheme)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    texts = enqueue_all(engine, reactor, 90)
    sender = start_sender(reactor, run_in_db, link)
    try:
        yield drain(reactor, engine, sender)
    finally:
        yield sender.stopService()
    rows = states(engine)
    assert {r.state for r in rows.values()} == {"SENT"}
    assert set(received_by_payment(smsc, texts).values()) == {1}  # each exactly once
    assert smsc._pending == {}  # no group of parts left incomplete on a handset
    assert smsc.refused >= 90 // n
    assert max(m.parts for m in smsc.messages_received) >= 2  # long ones were joined by their scheme
    for pid, r in rows.items():  # the recorded ids are the SMSC's, one per part
        [m] = [m for m in smsc.messages_received if m.text == texts[pid]]
        with engine.connect() as conn:
            assert outbox.message_ids(conn, r.id) == m.message_ids


@pytest.mark.allow_errors  # sms.uncertain is an error: each is a person's decision
@pytest_twisted.inlineCallbacks
def test_link_dropped_mid_window_never_duplicates_and_costs_the_others_nothing(
        reactor, db, smsc_factory, make_link):
    engine, run_in_db = db
    port, smsc = yield smsc_factory(DropMidWindowSMSC, every=25)
    link = make_link(port.getHost().port, window=10, reconnect_initial=0.02, reconnect_max=0.1)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    texts = enqueue_all(engine, reactor, 80)
    sender = start_sender(reactor, run_in_db, link)
    try:
        yield drain(reactor, engine, sender)
    finally:
        yield sender.stopService()
    rows = states(engine)
    by_state = collections.Counter(r.state for r in rows.values())
    assert set(by_state) <= {"SENT", "UNCERTAIN"} and by_state["SENT"] > 0
    assert smsc.drops >= 2
    # Only what was written when the link dropped can be uncertain: a window per drop.
    assert by_state["UNCERTAIN"] <= smsc.drops * 10
    received = received_by_payment(smsc, texts)
    assert max(received.values()) == 1  # no receipt reached a handset twice
    assert all(received[pid] == 1 for pid, r in rows.items() if r.state == "SENT")
    # A receipt handed back because the link fell before writing it was not charged an attempt.
    assert all(r.attempts == 1 for r in rows.values())


@pytest.mark.allow_errors  # sms.uncertain is an error: each is a person's decision
@pytest_twisted.inlineCallbacks
def test_an_smsc_that_never_answers_gets_each_receipt_once_and_none_resent(reactor, db, smsc_factory, make_link):
    engine, run_in_db = db
    port, smsc = yield smsc_factory(NoResponseOnSubmitSMSC)
    link = make_link(port.getHost().port, window=4, response_timeout=0.2, stop_timeout=2.0)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    enqueue_all(engine, reactor, 6)
    sender = start_sender(reactor, run_in_db, link)
    try:
        yield drain(reactor, engine, sender)
        yield sender.wake().addTimeout(TIMEOUT, reactor)  # another pass: nothing is resent
    finally:
        yield sender.stopService()
    rows = states(engine)
    # The documented ambiguous case: written, never answered -> UNCERTAIN, never sent again.
    assert {(r.state, r.attempts) for r in rows.values()} == {("UNCERTAIN", 1)}
    assert smsc.submits_received == 6  # the first part of each, once; no second part, no resend


@pytest.mark.allow_errors  # smpp.bind_refused: the alert
@pytest_twisted.inlineCallbacks
def test_refused_bind_stops_the_link_and_the_receipts_wait_unspent(reactor, db, smsc_factory, make_link):
    engine, run_in_db = db
    port, smsc = yield smsc_factory(RefuseBindSMSC, status=0x0D)
    link = make_link(port.getHost().port, reconnect_initial=0.01)
    yield link.wait_for_state(LinkState.REFUSED).addTimeout(TIMEOUT, reactor)
    enqueue_all(engine, reactor, 3)
    sender = start_sender(reactor, run_in_db, link)
    yield sender.wake().addTimeout(TIMEOUT, reactor)
    yield task.deferLater(reactor, 0.2, lambda: None)  # twenty reconnect delays: none is taken
    yield sender.stopService()
    assert len(smsc.binds) == 1
    assert {(r.state, r.attempts) for r in states(engine).values()} == {("QUEUED", 0)}


@pytest_twisted.inlineCallbacks
def test_a_window_keeps_a_slow_smsc_busy(reactor, db, smsc_factory, make_link):
    engine, run_in_db = db
    port, smsc = yield smsc_factory(SlowSMSC, delay=0.1)
    link = make_link(port.getHost().port, window=10)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    texts = {pid: t for pid, t in enqueue_all(engine, reactor, 30).items()}
    sender = start_sender(reactor, run_in_db, link)
    try:
        yield drain(reactor, engine, sender)
    finally:
        yield sender.stopService()
    assert set(received_by_payment(smsc, texts).values()) == {1}
    # The SMSC saw a full window of submits waiting for their answers, never more.
    assert smsc.max_outstanding == 10
