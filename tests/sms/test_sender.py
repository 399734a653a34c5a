"""OutboxSender with a Clock, in-memory SQLite, a synchronous run_in_db and a
fake link: the row states, attempts, retry times, message ids, the window,
and how many transactions a drain costs.

The old ``test_submit_without_answer_times_out_and_is_cancelled`` asserted
that a submit without an answer became FAILED and was sent again -- a
duplicate whenever the SMSC had taken it.  It is replaced by
``test_written_but_unanswered_receipt_is_uncertain_and_never_resent``.
"""

import pytest
from sqlalchemy import create_engine, select
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.sms import outbox
from billgw.sms.outbox import OutboxKind, sms_outbox
from billgw.sms.sender import OutboxSender
from billgw.sms.smpp_link import (
    SmppInvalidMessage,
    SmppLinkDown,
    SmppSubmitError,
    SmppUncertain,
    SubmitResult,
)

T0 = 1_700_000_000.0
TEXT = "Paid 12.500 JOD to Orange, card ****0010. Ref PAY-1"
MSISDN = "962791234567"


class FakeLink:
    """Records submits and lets the test answer each one."""

    def __init__(self, window=10):
        self.bound = True
        self.window = window
        self.submits = []  # (destination, text, deferred)

    def submit(self, destination, text):
        d = defer.Deferred()
        self.submits.append((destination, text, d))
        return d

    def answer(self, n, result):
        d = self.submits[n][2]
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)


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


def enqueue(engine, clock, payment_id="PAY-1", msisdn=MSISDN):
    with engine.begin() as conn:
        return outbox.enqueue(
            conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn=msisdn,
            language="en", text=TEXT, now=clock.seconds(),
        )


def row(engine, row_id):
    with engine.begin() as conn:
        return conn.execute(select(sms_outbox).where(sms_outbox.c.id == row_id)).one()


def ids(engine, row_id):
    with engine.begin() as conn:
        return ",".join(outbox.message_ids(conn, row_id)) or None


def at(seconds):
    return outbox.utc(seconds)


@pytest.fixture
def make_sender(db, clock):
    senders = []

    def make(link, **kwargs):
        settings = dict(
            run_in_db=db, link=link, clock=clock, owner="gw-1", poll_interval=5.0, batch_size=10,
            lease_seconds=120.0, max_attempts=3, retry_base=30.0, retry_cap=600.0,
        )
        settings.update(kwargs)
        sender = OutboxSender(**settings)
        senders.append(sender)
        return sender

    yield make
    for s in senders:
        if s.running:
            s.stopService()


def test_queued_row_becomes_sent_with_the_message_ids_in_two_transactions(engine, clock, db, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link).startService()
    [(destination, text, d)] = link.submits
    assert (destination, text) == (MSISDN, TEXT)
    r = row(engine, row_id)
    assert (r.state, r.attempts, r.lease_owner) == ("SENDING", 1, "gw-1")
    clock.advance(2)
    d.callback(SubmitResult(["m-1", "m-2"], 2, 8))
    r = row(engine, row_id)
    assert (r.state, r.attempts, ids(engine, row_id), r.parts, r.data_coding) == ("SENT", 1, "m-1,m-2", 2, 8)
    assert (r.lease_until, r.last_error, r.updated_at) == (None, None, at(T0 + 2))
    assert db.calls == ["_claim", "_record"]
    clock.advance(60)  # later polls do not send it again
    assert len(link.submits) == 1


def test_a_window_of_receipts_is_with_the_link_at_once_and_refilled_as_answers_come(engine, clock, db, make_sender):
    ids = [enqueue(engine, clock, f"PAY-{i}") for i in range(25)]
    link = FakeLink(window=10)
    make_sender(link, batch_size=10, poll_interval=3600.0).startService()
    assert len(link.submits) == 10  # one claim of a window, no waiting on each answer
    link.answer(0, SubmitResult(["m0"], 1, 0))
    assert len(link.submits) == 11  # the freed slot is refilled
    for n in range(1, 25):
        link.answer(n, SubmitResult([f"m{n}"], 1, 0))
    assert [row(engine, i).state for i in ids] == ["SENT"] * 25
    # Far fewer than the 2-3 transactions per receipt of the one-at-a-time sender.
    assert db.calls.count("_claim") + db.calls.count("_record") < 2 * 25


def test_temporary_refusal_is_failed_with_a_retry_time_then_retried(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link).startService()
    link.answer(0, SmppSubmitError(0x58))
    r = row(engine, row_id)
    assert (r.state, r.attempts, r.next_attempt_at) == ("FAILED", 1, at(T0 + 30))
    assert "0x00000058" in r.last_error
    clock.advance(25)  # polls at +5..+25: not due yet
    assert len(link.submits) == 1
    clock.advance(5)  # poll at +30: due
    assert len(link.submits) == 2
    assert row(engine, row_id).attempts == 2
    link.answer(1, SmppSubmitError(0x14))
    r = row(engine, row_id)
    # Back-off doubles with the attempts: 30 s, then 60 s.
    assert (r.state, r.attempts, r.next_attempt_at) == ("FAILED", 2, at(T0 + 30 + 60))


@pytest.mark.allow_errors  # sms.abandoned is an error: a person must look
def test_permanent_refusal_is_abandoned_at_once(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link, max_attempts=8).startService()
    link.answer(0, SmppSubmitError(0x0B, permanent=True))
    r = row(engine, row_id)
    assert (r.state, r.attempts) == ("ABANDONED", 1)
    assert "0x0000000B" in r.last_error
    clock.advance(3600)
    assert len(link.submits) == 1


@pytest.mark.allow_errors  # sms.abandoned is an error: a person must look
def test_abandoned_after_max_attempts(engine, clock, make_sender, fail_on_logged_errors):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link, max_attempts=2, retry_base=10.0, poll_interval=1.0).startService()
    link.answer(0, SmppSubmitError(0x58))
    clock.advance(10)
    link.answer(1, SmppSubmitError(0x58))
    r = row(engine, row_id)
    assert (r.state, r.attempts) == ("ABANDONED", 2)
    assert [e["payment_id"] for e in fail_on_logged_errors if e["event"] == "sms.abandoned"] == ["PAY-1"]
    clock.advance(3600)
    assert len(link.submits) == 2


@pytest.mark.allow_errors  # sms.uncertain is an error: a person decides
def test_written_but_unanswered_receipt_is_uncertain_and_never_resent(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link).startService()
    link.answer(0, SmppUncertain("part 2/3 written, no answer: no submit_sm_resp within 10.0s", ["a", ""][:1], 3))
    r = row(engine, row_id)
    assert (r.state, r.attempts, ids(engine, row_id), r.lease_until) == ("UNCERTAIN", 1, "a", None)
    assert "no submit_sm_resp" in r.last_error
    clock.advance(24 * 3600)
    assert len(link.submits) == 1  # never sent again automatically


def test_link_down_before_writing_hands_the_row_back_without_costing_an_attempt(engine, clock, make_sender):
    first, second = enqueue(engine, clock, "PAY-1"), enqueue(engine, clock, "PAY-2")
    link = FakeLink()
    make_sender(link).startService()
    link.answer(0, SmppLinkDown("SMPP link lost"))
    link.answer(1, SmppLinkDown("SMPP link lost"))
    link.bound = False
    for row_id in (first, second):
        r = row(engine, row_id)
        # Due again at the next poll, not at once (no spinning on a down SMSC).
        assert (r.state, r.attempts, r.lease_owner, r.next_attempt_at) == ("QUEUED", 0, None, at(T0 + 5))
    clock.advance(60)
    assert len(link.submits) == 2  # nothing claimed while down
    link.bound = True
    clock.advance(5)
    assert len(link.submits) == 4
    link.answer(2, SubmitResult(["x"], 1, 0))
    assert (row(engine, first).state, row(engine, first).attempts) == ("SENT", 1)


def test_a_row_handed_back_after_a_failure_stays_failed_with_its_attempts(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    make_sender(link).startService()
    link.answer(0, SmppSubmitError(0x58))
    clock.advance(30)
    link.answer(1, SmppLinkDown("gone"))
    r = row(engine, row_id)
    assert (r.state, r.attempts) == ("FAILED", 1)


@pytest.mark.allow_errors  # sms.abandoned
def test_a_poison_row_fails_alone_and_the_others_go_out(engine, clock, make_sender):
    bad = enqueue(engine, clock, "PAY-BAD", msisdn="٠٧٩١٢٣٤٥٦٧")
    good = enqueue(engine, clock, "PAY-OK")
    link = FakeLink()
    make_sender(link).startService()
    link.answer(0, SmppInvalidMessage("MSISDN is not 3..20 ASCII digits"))
    link.answer(1, SubmitResult(["ok"], 1, 0))
    assert (row(engine, bad).state, row(engine, good).state) == ("ABANDONED", "SENT")
    assert "ASCII" in row(engine, bad).last_error


def test_wake_during_a_drain_claims_at_once_within_the_same_drain(engine, clock, db, make_sender):
    enqueue(engine, clock, "PAY-1")
    link = FakeLink()
    sender = make_sender(link, poll_interval=3600.0)
    sender.startService()
    assert db.calls == ["_claim"]
    second = enqueue(engine, clock, "PAY-2")
    done = [sender.wake(), sender.wake()]
    # The running drain claims again at once: the new receipt does not wait
    # for the first one's answer, and is claimed once.
    assert db.calls[:2] == ["_claim", "_claim"] and len(link.submits) == 2
    assert not any(d.called for d in done)
    link.answer(0, SubmitResult(["a"], 1, 0))
    link.answer(1, SubmitResult(["b"], 1, 0))
    assert all(d.called for d in done)
    assert ids(engine, second) == "b"


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


def test_logs_carry_payment_id_and_no_text_or_msisdn(engine, clock, make_sender):
    enqueue(engine, clock, "PAY-9")
    link = FakeLink()
    with capture_logs() as logs:
        make_sender(link).startService()
        link.answer(0, SmppSubmitError(0x58))
    [event] = [e for e in logs if e["event"] == "sms.send_failed"]
    assert (event["payment_id"], event["attempt"], event["retry_in"]) == ("PAY-9", 1, 30.0)
    dump = repr(logs)
    assert "****0010" not in dump and MSISDN not in dump


def test_stop_waits_for_the_receipts_with_the_link(engine, clock, make_sender):
    row_id = enqueue(engine, clock)
    link = FakeLink()
    sender = make_sender(link)
    sender.startService()
    stopped = sender.stopService()
    assert not stopped.called
    link.answer(0, SubmitResult(["z"], 1, 0))
    assert stopped.called and row(engine, row_id).state == "SENT"
    clock.advance(60)
    assert len(link.submits) == 1


class OneSmscDownLink(FakeLink):
    """A router whose destination's SMSC is down while another is up: still
    'bound', but every submit is handed back at once, unwritten."""

    def submit(self, destination, text):
        self.submits.append((destination, text, None))
        return defer.fail(SmppLinkDown("SMSC zain: no transmitting bind is bound"))


def test_rows_handed_back_at_once_are_not_claimed_again_in_a_loop(engine, clock, db, make_sender):
    ids = [enqueue(engine, clock, f"PAY-{n}") for n in range(10)]
    link = OneSmscDownLink(window=10)
    make_sender(link, batch_size=10, poll_interval=5.0, retry_base=30.0).startService()
    # One claim, one hand-back: the rows wait for the next poll instead of
    # being claimed again at once, forever, within the same drain.
    assert (len(link.submits), db.calls.count("_claim")) == (10, 2)
    assert {(row(engine, i).state, row(engine, i).attempts) for i in ids} == {("QUEUED", 0)}
    clock.advance(5)
    assert len(link.submits) == 20
