"""Cross-checks against the journal on the paths away from the 0210: what
a biller says it holds after an advised posting or a status query, and what
a reversal undoes.  A mismatch is an EXCEPTION for a person -- never a
CONFIRMED payment, a receipt SMS, or a reversal applied as if it matched."""
import pytest_twisted
from twisted.internet import defer

from billgw.billing_adapters.interface import PaymentConfirmation
from billgw.gateway.schema import reversals, transaction_events

from settlement_world import (  # noqa: F401 (world is a fixture)
    advice,
    payment,
    reversal,
    settle_all,
    sms,
    state_of,
    table,
    world,
)


def short_confirmation(biller, amount):
    """The biller records the posting but confirms ``amount``."""
    real_pay = biller.pay

    def pay(order):
        d = real_pay(order)
        d.addCallback(lambda c: PaymentConfirmation(c.payment_id, c.receipt_number, amount))
        return d

    biller.pay = pay


def last_detail(engine):
    return table(engine, transaction_events)[-1].detail


@pytest_twisted.ensureDeferred
async def test_an_advised_posting_the_biller_confirms_for_another_amount_is_an_exception(world):
    processor, worker, biller, clock, engine = world
    short_confirmation(biller, 1)  # 1 fils of a 12.500 JOD payment
    assert (await processor.handle(advice())).fields["39"] == "00"
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "EXCEPTION"
    assert "amount confirmed 1 is not the 12500 posted" in last_detail(engine)
    assert sms(engine) == set()  # no receipt for what the biller did not record
    assert [c[0] for c in biller.calls] == ["pay"]  # not posted again, not reversed


@pytest_twisted.ensureDeferred
async def test_an_advised_posting_confirmed_for_its_amount_is_confirmed(world):
    processor, worker, biller, clock, engine = world
    short_confirmation(biller, 12_500)
    await processor.handle(advice())
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "CONFIRMED"


@pytest_twisted.ensureDeferred
async def test_a_status_query_finding_another_amount_is_an_exception(world):
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)  # the biller's timeout: IN_DOUBT
    assert (await pending).fields["39"] == "91"
    biller.hold = None
    [pid] = biller.ledger
    biller.ledger[pid][0] = 125  # the biller booked a tenth of the amount
    assert (await processor.handle(advice())).fields["39"] == "00"
    await settle_all(worker, clock, 5)
    assert state_of(engine) == "EXCEPTION"
    assert "biller holds 125, the journal 12500" in last_detail(engine)
    assert sms(engine) == set()
    assert [c[0] for c in biller.calls] == ["pay", "status"]


@pytest_twisted.ensureDeferred
async def test_a_reversal_of_another_amount_is_acknowledged_and_an_exception(world):
    processor, worker, biller, clock, engine = world
    assert (await processor.handle(payment())).fields["39"] == "00"
    ack = await processor.handle(reversal(amount=1_000))
    assert (ack.mti, ack.fields["39"]) == ("0430", "00")  # durable, so acknowledged
    repeat = await processor.handle(reversal(mti="0421", amount=1_000))
    assert repeat.fields == ack.fields
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "EXCEPTION"
    [rev] = table(engine, reversals)
    assert (rev.state, rev.detail) == ("EXCEPTION", "reversal amount 1000 is not the payment's 12500")
    assert [c[0] for c in biller.calls] == ["pay"]  # nothing reversed at the biller by itself
    assert list(biller.held().values()) == [12_500]


@pytest_twisted.ensureDeferred
async def test_a_reversal_of_the_full_amount_is_applied(world):
    processor, worker, biller, clock, engine = world
    await processor.handle(payment())
    await processor.handle(reversal(amount=12_500))
    await settle_all(worker, clock, 3)
    assert state_of(engine) == "REVERSED"
    assert biller.held() == {}


@pytest_twisted.ensureDeferred
async def test_a_reversal_of_another_amount_of_a_declined_payment_has_nothing_to_undo(world):
    processor, worker, biller, clock, engine = world
    assert (await processor.handle(payment(amount=0))).fields["39"] == "13"
    assert (await processor.handle(reversal(amount=5))).fields["39"] == "00"
    assert state_of(engine) == "DECLINED"
    [rev] = table(engine, reversals)
    assert rev.state == "NOTHING_TO_REVERSE"
