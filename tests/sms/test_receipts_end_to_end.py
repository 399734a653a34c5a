"""Delivery receipts over real loopback sockets: SMSC simulator -> SmppLink
-> DeliveryRecorder -> the outbox on every database (migrated schema), with
the DB work on a one-thread pool as the gateway does it.  The row ends
DELIVERED, UNDELIVERABLE or EXPIRED from what the SMSC said, whatever form
the receipt took and whenever it came."""
import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from billgw.sms import outbox
from billgw.sms.dlr_recorder import DeliveryRecorder
from billgw.sms.outbox import OutboxKind, sms_outbox, sms_outbox_parts
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import LinkState
from billgw.sms.smsc_dlr import DlrPolicy
from billgw.sms.smsc_sim import SmscFactory

pytestmark = pytest.mark.timeout(30)
TIMEOUT = 10.0
MSISDN = "962791234567"
LONG = "Paid 12.500 JOD to Orange Jordan, account 0791234567. " * 6  # 330 GSM-7 characters: 3 parts


@pytest.fixture
def run_in_db(engine, reactor):
    pool = ThreadPool(minthreads=1, maxthreads=1, name="test-db")
    pool.start()

    def in_transaction(fn, *args):
        with engine.begin() as conn:
            return fn(conn, *args)

    yield lambda fn, *args: deferToThreadPool(reactor, pool, in_transaction, fn, *args)
    pool.stop()


def enqueue(engine, reactor, text, payment_id="PAY-1", msisdn=MSISDN):
    with engine.begin() as conn:
        return outbox.enqueue(conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn=msisdn,
                              language="en", text=text, now=reactor.seconds())


def row_and_parts(engine, row_id):
    with engine.connect() as conn:
        row = conn.execute(select(sms_outbox).where(sms_outbox.c.id == row_id)).one()
        parts = conn.execute(select(sms_outbox_parts).where(sms_outbox_parts.c.outbox_id == row_id)
                             .order_by(sms_outbox_parts.c.part_number)).all()
    return row, parts


@pytest_twisted.inlineCallbacks
def send_and_wait_for_receipts(reactor, engine, run_in_db, link, smsc, texts, receipts, receivers=()):
    """Queue ``texts`` (payment id -> text), drain them, wait for ``receipts`` receipts recorded."""
    recorder = DeliveryRecorder(run_in_db=run_in_db, clock=reactor, retry_interval=0.05)
    for each in (link, *receivers):
        each.on_deliver = recorder.deliver_sm
    recorder.startService()
    ids = {pid: enqueue(engine, reactor, text, pid) for pid, text in texts.items()}
    sender = OutboxSender(run_in_db=run_in_db, link=link, clock=reactor, owner="e2e", poll_interval=3600.0,
                          batch_size=10, lease_seconds=60.0, max_attempts=3, retry_base=30.0,
                          on_parts_recorded=recorder.parts_recorded)
    sender.startService()
    try:
        yield sender.wake().addTimeout(TIMEOUT, reactor)
        yield recorder.wait_recorded(receipts).addTimeout(TIMEOUT, reactor)
        yield recorder.idle().addTimeout(TIMEOUT, reactor)
    finally:
        yield sender.stopService()
        yield recorder.stopService()
    return ids, recorder


@pytest_twisted.inlineCallbacks
def test_tlv_receipts_for_every_part_end_the_row_delivered(reactor, engine, run_in_db, smsc_factory, make_link):
    port, smsc = yield smsc_factory(SmscFactory, dlr=DlrPolicy(form="tlv"))
    link = make_link(port.getHost().port)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    ids, recorder = yield send_and_wait_for_receipts(reactor, engine, run_in_db, link, smsc, {"P1": LONG}, 3)
    row, parts = row_and_parts(engine, ids["P1"])
    [m] = smsc.messages_received
    assert (row.state, row.parts) == ("DELIVERED", 3)
    assert [p.message_id for p in parts] == m.message_ids
    assert [p.dlr_stat for p in parts] == ["DELIVRD"] * 3 and all(p.dlr_at for p in parts)
    assert smsc.dlr.sent == 3 and recorder.given_up == 0
    # Every deliver_sm was answered.
    yield smsc.wait_for_pdu(0x80000005, 3).addTimeout(TIMEOUT, reactor)


@pytest_twisted.inlineCallbacks
def test_a_text_only_undeliv_receipt_ends_the_row_undeliverable(reactor, engine, run_in_db, smsc_factory, make_link):
    port, smsc = yield smsc_factory(SmscFactory, dlr=DlrPolicy(form="text", stat_for={"96279": "UNDELIV"},
                                                              error="034"))
    link = make_link(port.getHost().port)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    ids, _ = yield send_and_wait_for_receipts(reactor, engine, run_in_db, link, smsc,
                                              {"P1": "short", "P2": "short too"}, 2)
    row, [part] = row_and_parts(engine, ids["P1"])
    assert (row.state, part.dlr_stat, part.dlr_error) == ("UNDELIVERABLE", "UNDELIV", "034")


@pytest_twisted.inlineCallbacks
def test_receipts_before_their_submit_sm_resp_are_kept_until_the_ids_are_known(
        reactor, engine, run_in_db, smsc_factory, make_link):
    port, smsc = yield smsc_factory(SmscFactory, dlr=DlrPolicy(form="tlv", early=True))
    link = make_link(port.getHost().port)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    texts = {f"P{n}": f"receipt {n}" for n in range(5)}
    ids, recorder = yield send_and_wait_for_receipts(reactor, engine, run_in_db, link, smsc, texts, 5)
    assert {row_and_parts(engine, i)[0].state for i in ids.values()} == {"DELIVERED"}
    assert recorder.held == 0 and recorder.given_up == 0


@pytest_twisted.inlineCallbacks
def test_hex_ids_in_responses_and_decimal_ids_in_receipts_are_matched(
        reactor, engine, run_in_db, smsc_factory, make_link):
    port, smsc = yield smsc_factory(SmscFactory, dlr=DlrPolicy(form="text", ids="hex-decimal"))
    link = make_link(port.getHost().port)
    yield link.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    texts = {f"P{n}": f"receipt {n}" for n in range(12)}  # ids 0000000A.. read as 10.. in receipts
    ids, _ = yield send_and_wait_for_receipts(reactor, engine, run_in_db, link, smsc, texts, 12)
    assert {row_and_parts(engine, i)[0].state for i in ids.values()} == {"DELIVERED"}
    assert row_and_parts(engine, ids["P11"])[1][0].message_id == "0000000C"


@pytest_twisted.inlineCallbacks
def test_a_transmitter_and_a_receiver_bind_together_get_the_receipts(
        reactor, engine, run_in_db, smsc_factory, make_link):
    port, smsc = yield smsc_factory(SmscFactory, dlr=DlrPolicy(form="tlv", ids="zeros"))
    receiver = make_link(port.getHost().port, bind_mode="receiver")
    yield receiver.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    transmitter = make_link(port.getHost().port, bind_mode="transmitter")
    yield transmitter.wait_for_state(LinkState.BOUND).addTimeout(TIMEOUT, reactor)
    ids, _ = yield send_and_wait_for_receipts(reactor, engine, run_in_db, transmitter, smsc, {"P1": "hi"}, 1,
                                              receivers=[receiver])
    assert row_and_parts(engine, ids["P1"])[0].state == "DELIVERED"
    assert sorted(b[1] for b in smsc.binds) == ["receiver", "transmitter"]
