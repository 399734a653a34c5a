"""OutboxSender with a Clock, in-memory SQLite, a synchronous run_in_db and a
fake link: the row states, attempts, retry times and message ids."""

import pytest
from sqlalchemy import create_engine, select
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, sms_outbox
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import SmppLinkDown, SmppSubmitError, SubmitResult

T0 = 1_700_000_000.0
TEXT = "Paid 12.500 JOD to Orange, card ****0010. Ref PAY-1"
MSISDN = "962791234567"


class FakeLink:
    """Records submits and lets the test answer each one."""

    def __init__(self):
        self.bound = True
        self.submits = []  # (destination, text, deferred)
        self.cancelled = 0

    def submit(self, destination, text):
        def cancel(d):
            self.cancelled += 1

        d = defer.Deferred(cancel)
        self.submits.append((destination, text, d))
        return d


@pytest.fixture
def engine():
    engine = create_engine("sqlite://")
    outbox.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine):
    calls = []

    def run_in_db(fn, *args):
        calls.append(fn.__name__)
        with engine.begin() as conn:
            return defer.succeed(fn(conn, *args))

    run_in_db.calls = calls
    return run_in_db


@pytest.fixture
def clock():
    c = Clock()
    c.advance(T0)
    return c


def enqueue(engine, clock, payment_id="PAY-1"):
    with engine.begin() as conn:
        return outbox.enqueue(
            conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn=MSISDN,
            language="en", text=TEXT, now=clock.seconds(),
        )


def row(engine, row_id):
    with engine.begin() as conn:
        return conn.execute(select(sms_outbox).where(sms_outbox.c.id == row_id)).one()


def at(seconds):
    return outbox.utc(seconds)


@pytest.fixture
def make_sender(db, clock):
    senders = []

    def make(link, **kwargs):
        settings = dict(
            run_in_db=db, link=link, clock=clock, owner="gw-1", poll_interval=5.0, batch_size=10,
            lease_seconds=120.0, max_attempts=3, retry_base=30.0, retry_cap=600.0, submit_timeout=60.0,
        )
        settings.update(kwargs)
        sender = OutboxSender(**settings)
        senders.append(sender)
        return sender

    yield make
    for s in senders:
        if s.running:
            s.stopService()


def test_queued_row_becomes_sent_with_the_message_ids(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link).startService()
    [(destination, text, d)] = link.submits
    assert (destination, text) == (MSISDN, TEXT)
    assert row(engine, row_id).state == "SENDING"
    clock.advance(2)
    d.callback(SubmitResult(["m-1", "m-2"], 2, 8))
    r = row(engine, row_id)
    assert (r.state, r.attempts, r.smsc_message_ids, r.parts, r.data_coding) == ("SENT", 1, "m-1,m-2", 2, 8)
    assert (r.lease_until, r.last_error, r.updated_at) == (None, None, at(T0 + 2))
    clock.advance(60)  # later polls do not send it again
    assert len(link.submits) == 1


def test_refused_submit_is_failed_with_a_retry_time_then_retried(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link).startService()
    link.submits[0][2].errback(SmppSubmitError(0x58))
    r = row(engine, row_id)
    assert (r.state, r.attempts, r.next_attempt_at) == ("FAILED", 1, at(T0 + 30))
    assert "0x00000058" in r.last_error
    clock.advance(25)  # polls at +5..+25: not due yet
    assert len(link.submits) == 1
    clock.advance(5)  # poll at +30: due
    assert len(link.submits) == 2
    assert row(engine, row_id).attempts == 2
    link.submits[1][2].errback(SmppLinkDown("gone"))
    r = row(engine, row_id)
    # Back-off doubles with the attempts: 30 s, then 60 s.
    assert (r.state, r.attempts, r.next_attempt_at) == ("FAILED", 2, at(T0 + 30 + 60))
    assert r.last_error == "SmppLinkDown: gone"


@pytest.mark.allow_errors  # sms.abandoned is an error: a person must look
def test_abandoned_after_max_attempts(engine, clock, make_sender, fail_on_logged_errors):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link, max_attempts=2, retry_base=10.0, poll_interval=1.0).startService()
    link.submits[0][2].errback(SmppSubmitError(0x58))
    clock.advance(10)
    link.submits[1][2].errback(SmppSubmitError(0x58))
    r = row(engine, row_id)
    assert (r.state, r.attempts) == ("ABANDONED", 2)
    assert [e["payment_id"] for e in fail_on_logged_errors if e["event"] == "sms.abandoned"] == ["PAY-1"]
    clock.advance(3600)
    assert len(link.submits) == 2


def test_submit_without_answer_times_out_and_is_cancelled(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link, submit_timeout=45.0).startService()
    clock.advance(44)
    assert row(engine, row_id).state == "SENDING"
    clock.advance(1)
    r = row(engine, row_id)
    assert (r.state, r.next_attempt_at, r.last_error) == ("FAILED", at(T0 + 45 + 30), "no answer from the SMPP link in time")
    assert link.cancelled == 1


def test_wake_during_a_drain_coalesces_into_one_more_pass(engine, clock, db, make_sender):
    enqueue(engine, clock, "PAY-1")
    link = FakeLink()
    sender = make_sender(link, poll_interval=3600.0)
    sender.startService()
    assert db.calls == ["_claim", "_begin_submit"]
    second = enqueue(engine, clock, "PAY-2")
    done = [sender.wake(), sender.wake(), sender.wake()]
    assert db.calls == ["_claim", "_begin_submit"]  # no second drain while one is running
    link.submits[0][2].callback(SubmitResult(["a"], 1, 0))
    # The same drain makes one more pass and picks up the new receipt at once.
    assert db.calls == ["_claim", "_begin_submit", "_mark_sent", "_claim", "_begin_submit"]
    assert [s[1] for s in link.submits] == [TEXT, TEXT] and len(link.submits) == 2
    assert not any(d.called for d in done)
    link.submits[1][2].callback(SubmitResult(["b"], 1, 0))
    assert all(d.called for d in done)
    assert row(engine, second).smsc_message_ids == "b"


def test_full_batches_are_drained_without_waiting_for_the_poll(engine, clock, make_sender):
    ids = [enqueue(engine, clock, f"PAY-{i}") for i in range(5)]
    link = FakeLink()
    make_sender(link, batch_size=2, poll_interval=3600.0).startService()
    for n in range(5):
        link.submits[n][2].callback(SubmitResult([f"m{n}"], 1, 0))
    assert [row(engine, i).state for i in ids] == ["SENT"] * 5


def test_nothing_is_claimed_while_the_link_is_not_bound(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    link.bound = False
    make_sender(link).startService()
    clock.advance(60)
    r = row(engine, row_id)
    assert (r.state, r.attempts, link.submits) == ("QUEUED", 0, [])
    link.bound = True
    clock.advance(5)
    assert len(link.submits) == 1


def test_submit_timeout_must_be_shorter_than_the_lease(db, clock):
    with pytest.raises(ValueError, match="lease_seconds"):
        OutboxSender(run_in_db=db, link=FakeLink(), clock=clock, owner="x", lease_seconds=30.0, submit_timeout=30.0)


def test_logs_carry_payment_id_and_no_text_or_msisdn(engine, clock, make_sender):
    enqueue(engine, clock, "PAY-9")
    link = FakeLink()
    with capture_logs() as logs:
        make_sender(link).startService()
        link.submits[0][2].errback(SmppSubmitError(0x58))
    [event] = [e for e in logs if e["event"] == "sms.send_failed"]
    assert (event["payment_id"], event["attempt"], event["retry_in"]) == ("PAY-9", 1, 30.0)
    dump = repr(logs)
    assert "****0010" not in dump and MSISDN not in dump


def test_stop_waits_for_the_drain_in_progress(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    sender = make_sender(link)
    sender.startService()
    stopped = sender.stopService()
    assert not stopped.called
    link.submits[0][2].callback(SubmitResult(["z"], 1, 0))
    assert stopped.called and row(engine, row_id).state == "SENT"
    clock.advance(60)
    assert len(link.submits) == 1
