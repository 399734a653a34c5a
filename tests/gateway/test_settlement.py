"""Reversals, advices, in-doubt settlement and recovery: the processor and the
biller worker against a real journal and an in-memory biller, on a Clock."""

import pytest
import pytest_twisted
from sqlalchemy import update
from twisted.internet import defer

from billgw.gateway import biller_outbox
from billgw.gateway.journal import utc
from billgw.gateway.schema import biller_outbox as biller_outbox_table
from billgw.gateway.schema import reversals, transactions

from billgw.billing_adapters.interface import BillerUnavailable, PaymentConfirmation
from billgw.gateway.config import load_settings
from billgw.gateway.processor import BillerRoute
from billgw.sms.outbox import sms_outbox

from settlement_world import (  # noqa: F401 (world is a fixture)
    NOW,
    advice,
    payment,
    reversal,
    settle_all,
    sms,
    state_of,
    table,
    world,
)


@pytest_twisted.ensureDeferred
async def test_reversal_of_confirmed_payment_before_its_sms_left(world):
    processor, worker, biller, clock, engine = world
    approved = await processor.handle(payment())
    assert approved.fields["39"] == "00"
    ack = await processor.handle(reversal())
    assert (ack.mti, ack.fields["39"], ack.fields["11"], ack.fields["90"][:10]) == ("0430", "00", "000500", "0200000123")
    assert state_of(engine) == "REVERSING"
    assert sms(engine) == {("receipt", "CANCELLED")}  # never sent for a reversed payment
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "REVERSED"
    assert biller.held() == {}
    [rev] = table(engine, reversals)
    assert (rev.state, rev.repeat_count) == ("BILLER_REVERSED", 0)
    repeat = await processor.handle(reversal(mti="0421"))
    assert (repeat.mti, repeat.fields["39"]) == ("0430", "00")
    assert table(engine, reversals)[0].repeat_count == 1
    [(_, pid)] = [c for c in biller.calls if c[0] == "pay"]
    assert [c for c in biller.calls if c[0] == "reverse"] == [("reverse", pid)]  # the repeat undid nothing more


@pytest_twisted.ensureDeferred
async def test_reversal_after_receipt_sent_queues_a_notice_in_the_same_language(world):
    processor, worker, biller, clock, engine = world
    await processor.handle(payment(language="ar"))
    with engine.begin() as conn:
        conn.execute(update(sms_outbox).values(state="SENT"))
    await processor.handle(reversal())
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "REVERSED"
    rows = {r.kind: r for r in table(engine, sms_outbox)}
    assert rows["receipt"].state == "SENT"
    notice = rows["reversal_notice"]
    assert notice.state == "QUEUED" and notice.language == "ar" and "أعيدت دفعتك" in notice.text


@pytest_twisted.ensureDeferred
async def test_reversal_racing_the_posting_wins(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred()
    pending = processor.handle(payment())
    ack = await processor.handle(reversal())
    assert ack.fields["39"] == "00"
    [(_, pid)] = [c for c in biller.calls if c[0] == "pay"]
    biller.hold.callback(PaymentConfirmation(pid, "R-1", 12500))
    answer = await pending
    assert answer.fields["39"] == "91"  # not an approval: the switch reversed it
    assert state_of(engine) == "REVERSING"
    assert sms(engine) == set()
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "REVERSED"
    assert biller.held() == {}


@pytest_twisted.ensureDeferred
async def test_reversal_before_the_original_and_the_late_original_is_declined(world):
    processor, worker, biller, clock, engine = world
    ack = await processor.handle(reversal())
    assert (ack.mti, ack.fields["39"]) == ("0430", "00")
    [rev] = table(engine, reversals)
    assert (rev.state, rev.transaction_id) == ("NOT_FOUND", None)
    late = await processor.handle(payment())
    assert late.fields["39"] == "12"
    assert biller.calls == []
    assert state_of(engine) == "DECLINED"
    [rev] = table(engine, reversals)
    assert rev.state == "NOTHING_TO_REVERSE" and rev.transaction_id is not None


@pytest_twisted.ensureDeferred
async def test_reversal_of_declined_payment_has_nothing_to_undo(world):
    processor, worker, biller, clock, engine = world
    declined = await processor.handle(payment(amount=50))  # below min_amount
    assert declined.fields["39"] == "13"
    await processor.handle(reversal(amount=50))
    [rev] = table(engine, reversals)
    assert rev.state == "NOTHING_TO_REVERSE"
    assert table(engine, biller_outbox_table) == []


@pytest_twisted.ensureDeferred
async def test_in_doubt_payment_held_by_biller_is_reversed_not_reposted(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)  # the biller records, then never answers
    pending = processor.handle(payment())
    clock.advance(10.5)
    answer = await pending
    assert answer.fields["39"] == "91"
    assert state_of(engine) == "IN_DOUBT"
    biller.hold = None
    await settle_all(worker, clock, 5)
    assert state_of(engine) == "REVERSED"
    assert [c[0] for c in biller.calls] == ["pay", "status", "reverse"]
    assert biller.held() == {}
    assert sms(engine) == set()


@pytest_twisted.ensureDeferred
async def test_in_doubt_payment_not_at_biller_is_cancelled_to_bar_a_late_posting(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    [(_, pid)] = [c for c in biller.calls if c[0] == "pay"]
    del biller.ledger[pid]  # this time the biller never recorded it
    clock.advance(10.5)
    await pending
    biller.hold = None
    await settle_all(worker, clock, 5)
    assert state_of(engine) == "REVERSED"
    assert pid in biller.tombstones


@pytest_twisted.ensureDeferred
async def test_advice_for_unknown_payment_is_stored_then_posted_once(world):
    processor, worker, biller, clock, engine = world
    ack = await processor.handle(advice())
    assert (ack.mti, ack.fields["39"], ack.fields["11"]) == ("0230", "00", "000123")
    assert biller.calls == []  # acknowledged once durable; posted in the background
    repeat = await processor.handle(advice(mti="0221"))
    assert repeat.fields == ack.fields
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "CONFIRMED"
    assert [c[0] for c in biller.calls] == ["pay"]
    assert list(biller.held().values()) == [12500]
    assert sms(engine) == {("receipt", "QUEUED")}


@pytest_twisted.ensureDeferred
async def test_advice_for_confirmed_payment_posts_nothing_again(world):
    processor, worker, biller, clock, engine = world
    await processor.handle(payment())
    ack = await processor.handle(advice())
    assert ack.fields["39"] == "00"
    await settle_all(worker, clock, 3)
    assert [c[0] for c in biller.calls] == ["pay"]
    assert state_of(engine) == "CONFIRMED"


@pytest_twisted.ensureDeferred
async def test_advice_for_in_doubt_payment_completes_it_by_status(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)
    await pending
    biller.hold = None
    ack = await processor.handle(advice())
    assert ack.fields["39"] == "00"
    await settle_all(worker, clock, 5)
    assert state_of(engine) == "CONFIRMED"
    assert [c[0] for c in biller.calls] == ["pay", "status"]
    assert len(biller.held()) == 1
    assert sms(engine) == {("receipt", "QUEUED")}


@pytest_twisted.ensureDeferred
async def test_advice_with_other_content_than_the_original_is_94(world):
    processor, worker, biller, clock, engine = world
    await processor.handle(payment())
    clash = await processor.handle(advice(amount=999))
    assert clash.fields["39"] == "94"


@pytest_twisted.ensureDeferred
async def test_biller_refusing_reversals_makes_an_exception(world, sync_pool):
    processor, worker, biller, clock, engine = world
    settings = load_settings(environ={})
    import dataclasses

    never = dataclasses.replace(settings.billers["TEL"], reversal_policy="never")
    processor._billers["TEL"] = BillerRoute(never, biller)
    await processor.handle(payment())
    await processor.handle(reversal())
    assert state_of(engine) == "EXCEPTION"
    assert table(engine, reversals)[0].state == "EXCEPTION"
    assert len(biller.held()) == 1  # a person refunds: the gateway did not pretend


@pytest_twisted.ensureDeferred
async def test_abandoned_posting_is_recovered_from_the_database(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    processor.handle(payment())  # then "the process dies": forget the in-memory state
    processor._in_flight.clear()
    biller.hold = None
    with engine.begin() as conn:  # the crash: the row stays POSTING, untouched
        conn.execute(update(transactions).values(updated_at=utc(NOW - 100)))
    await settle_all(worker, clock, 5)
    assert state_of(engine) == "REVERSED"  # held by the biller, never approved to the switch
    assert biller.held() == {}


@pytest.mark.allow_errors
@pytest_twisted.ensureDeferred
async def test_biller_work_retries_with_backoff_then_expires_into_exception(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)
    await pending
    biller.fail_status = BillerUnavailable("down")
    await settle_all(worker, clock, 20)
    [item] = table(engine, biller_outbox_table)
    assert item.action == "STATUS" and item.state == "PENDING" and item.attempts >= 3
    assert "down" in item.last_error
    await settle_all(worker, clock, 700)
    assert state_of(engine) == "EXCEPTION"
    [item] = table(engine, biller_outbox_table)
    assert item.state == "EXPIRED"


def test_backoff_grows_and_is_capped():
    assert biller_outbox.backoff(1, base=2, cap=30, jitter=1.0) == 2
    assert biller_outbox.backoff(3, base=2, cap=30, jitter=1.0) == 8
    assert biller_outbox.backoff(10, base=2, cap=30, jitter=1.0) == 30
    assert biller_outbox.backoff(3, base=2, cap=30, jitter=0.0) == 4


@pytest_twisted.ensureDeferred
async def test_advice_after_the_gateway_undid_an_in_doubt_payment_is_an_exception(world):
    """The switch timed out and stood in (debited the customer), but its
    advice came after the gateway had settled the in-doubt payment by
    reversing it: nobody may quietly keep the customer's money."""
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)
    await pending
    biller.hold = None
    await settle_all(worker, clock, 5)
    assert state_of(engine) == "REVERSED"
    ack = await processor.handle(advice())
    assert ack.fields["39"] == "00"
    assert state_of(engine) == "EXCEPTION"
    [row] = table(engine, transactions)
    assert row.advice_received and not row.reversal_requested


@pytest_twisted.ensureDeferred
async def test_advice_and_original_racing_never_fail(world):
    """The advice journaled first: the original finds it and is answered
    from it; one posting."""
    processor, worker, biller, clock, engine = world
    await processor.handle(advice())
    repeat_of_original = await processor.handle(payment())
    assert repeat_of_original.fields["39"] in ("00", "91")
    await settle_all(worker, clock, 3)
    assert [c[0] for c in biller.calls] == ["pay"]
    assert state_of(engine) == "CONFIRMED"


@pytest.mark.allow_errors
@pytest_twisted.ensureDeferred
async def test_a_reversal_the_journal_cannot_take_is_answered_96_not_dropped(world):
    """Nothing crashes the listener: a 0420 whose recording fails gets a 0430
    with 96 (the switch repeats it), and the error is logged."""
    processor, worker, biller, clock, engine = world

    def broken(*args, **kwargs):
        return defer.fail(RuntimeError("database is gone"))

    processor._journal.run = processor._journal.admit = broken
    answer = await processor.handle(reversal())
    assert (answer.mti, answer.fields["39"], answer.fields["11"]) == ("0430", "96", "000500")
