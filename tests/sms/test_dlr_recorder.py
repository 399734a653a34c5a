"""DeliveryRecorder on a Clock with a synchronous database: receipts that
come before their ids are held and matched later, bounded in time and count;
what is not a receipt is ignored; a database failure keeps the receipt."""
import pytest
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.sms import outbox
from billgw.sms.dlr_recorder import DeliveryRecorder
from billgw.sms.outbox import Outcome, OutboxKind, OutboxState, sms_outbox

T0 = 1_700_000_000.0


class Pdu:
    def __init__(self, message_id, state=2, esm_class=0x04, short_message=b""):
        self.receipted_message_id = message_id.encode()
        self.message_state = state
        self.esm_class = esm_class
        self.short_message = short_message


@pytest.fixture
def clock():
    c = Clock()
    c.advance(T0)
    return c


@pytest.fixture
def db(engine):
    def run_in_db(fn, *args):
        try:
            with engine.begin() as conn:
                return defer.succeed(fn(conn, *args))
        except Exception:
            return defer.fail()

    return run_in_db


def sent(engine, payment_id, ids, now=T0):
    with engine.begin() as conn:
        row_id = outbox.enqueue(conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn="962791234567",
                                language="en", text="Paid", now=now)
        [item] = [i for i in outbox.claim_for_submit(conn, now=now, owner="gw", lease_seconds=60, limit=10)
                  if i.id == row_id]
        outbox.record_outcomes(conn, [Outcome(row_id, OutboxState.SENT, tuple(ids), 0, len(ids), smsc="main",
                                              attempt=item.attempts)], owner="gw", now=now)
    return row_id


def state(engine, row_id):
    with engine.connect() as conn:
        return conn.execute(select(sms_outbox.c.state).where(sms_outbox.c.id == row_id)).scalar_one()


def test_a_receipt_before_its_id_is_held_then_matched_when_the_parts_are_recorded(engine, db, clock):
    recorder = DeliveryRecorder(run_in_db=db, clock=clock, hold_seconds=600)
    recorder.deliver_sm(Pdu("m1"), "main")
    assert (recorder.held, recorder.recorded) == (1, 0)
    row_id = sent(engine, "P1", ["M1"])
    clock.advance(1)
    recorder.parts_recorded()  # what the sender calls after committing ids
    assert (recorder.held, recorder.recorded, state(engine, row_id)) == (0, 1, "DELIVERED")


def test_the_timer_retries_held_receipts(engine, db, clock):
    recorder = DeliveryRecorder(run_in_db=db, clock=clock, retry_interval=5.0)
    recorder.startService()
    recorder.deliver_sm(Pdu("m1", state=5), "main")
    row_id = sent(engine, "P1", ["m1"])
    clock.advance(5)
    assert state(engine, row_id) == "UNDELIVERABLE"
    recorder.stopService()


def test_a_receipt_never_matched_is_given_up_after_hold_seconds(engine, db, clock, fail_on_logged_errors):
    recorder = DeliveryRecorder(run_in_db=db, clock=clock, hold_seconds=60)
    recorder.deliver_sm(Pdu("ghost"), "main")
    clock.advance(30)
    recorder.parts_recorded()
    assert (recorder.held, recorder.given_up) == (1, 0)
    clock.advance(31)
    recorder.parts_recorded()
    assert (recorder.held, recorder.given_up) == (0, 1)
    [event] = [e for e in fail_on_logged_errors if e["event"] == "sms.dlr_unmatched"]
    assert (event["message_id"], event["stat"], event["log_level"]) == ("ghost", "DELIVRD", "warning")


def test_at_most_max_held_receipts_are_held_the_oldest_given_up_first(engine, db, clock):
    recorder = DeliveryRecorder(run_in_db=db, clock=clock, max_held=3)
    for n in range(5):
        recorder.deliver_sm(Pdu(f"x{n}"), "main")
    assert (recorder.held, recorder.given_up) == (3, 2)
    sent(engine, "P1", ["x0", "x4"])  # x0 was given up; x4 is still held
    recorder.parts_recorded()
    assert (recorder.recorded, recorder.held) == (1, 2)


def test_an_mo_message_is_not_recorded(engine, db, clock, fail_on_logged_errors):
    recorder = DeliveryRecorder(run_in_db=db, clock=clock)
    mo = Pdu("", state=None, esm_class=0x00, short_message=b"BALANCE")
    mo.receipted_message_id = None
    recorder.deliver_sm(mo, "main")
    assert (recorder.held, recorder.recorded) == (0, 0)
    assert [e["event"] for e in fail_on_logged_errors] == ["sms.deliver_sm_not_a_receipt"]


@pytest.mark.allow_errors  # sms.dlr_record_failed is the behaviour under test
def test_a_database_failure_keeps_the_receipt_for_the_next_try(engine, db, clock):
    calls = []

    def flaky(fn, *args):
        calls.append(fn)
        return defer.fail(RuntimeError("database went away")) if len(calls) == 1 else db(fn, *args)

    recorder = DeliveryRecorder(run_in_db=flaky, clock=clock)
    row_id = sent(engine, "P1", ["m1"])
    recorder.deliver_sm(Pdu("m1"), "main")
    assert (recorder.held, recorder.recorded) == (1, 0)
    recorder.parts_recorded()
    assert (recorder.recorded, state(engine, row_id)) == (1, "DELIVERED")
