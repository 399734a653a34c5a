"""Contract v2 through the processor and the biller worker, on a Clock and a
real journal (SQLite, and PostgreSQL when configured): a biller that
records later (ACCEPTED until its batch runs), and billers without status
queries, settled by their own means."""

import pytest_twisted
from twisted.internet import defer

from billgw.billing_adapters.interface import (
    BillerCapabilities,
    PaymentAccepted,
    PaymentConfirmation,
    PaymentStatus,
    PaymentStatusKind,
)
from billgw.gateway.schema import biller_outbox as biller_outbox_table
from billgw.gateway.schema import transactions
from billgw.iso8583.bill_data import decode_tlv

from settlement_world import (  # noqa: F401 (world is a fixture)
    advice,
    LedgerBiller,
    payment,
    reversal,
    settle_all,
    sms,
    state_of,
    table,
    world,
)


class BatchBiller(LedgerBiller):
    """Takes payments into an intake; ``run_batch`` books or rejects them."""

    def __init__(self, reject=False, **kw):
        super().__init__(**kw)
        self.reject = reject
        self.booked = {}  # payment id -> receipt, or None when rejected

    def pay(self, order):
        self.calls.append(("pay", order.payment_id))
        self.ledger.setdefault(order.payment_id, [order.amount, False])
        if self.hold is not None:
            return self.hold
        if order.payment_id in self.booked:
            return defer.succeed(PaymentConfirmation(order.payment_id, self.booked[order.payment_id], order.amount))
        return defer.succeed(PaymentAccepted(order.payment_id, f"IN-{order.payment_id[:6]}", order.amount))

    def run_batch(self):
        for pid, (_amount, withdrawn) in self.ledger.items():
            if not withdrawn and pid not in self.booked:
                self.booked[pid] = None if self.reject else f"WR-{pid[:6]}"

    def status(self, payment_id):
        self.calls.append(("status", payment_id))
        entry = self.ledger.get(payment_id)
        if entry is None:
            return defer.succeed(PaymentStatus(payment_id, PaymentStatusKind.NOT_FOUND))
        if entry[1]:
            return defer.succeed(PaymentStatus(payment_id, PaymentStatusKind.REVERSED))
        if payment_id not in self.booked:
            return defer.succeed(PaymentStatus(payment_id, PaymentStatusKind.ACCEPTED, f"IN-{payment_id[:6]}"))
        receipt = self.booked[payment_id]
        if receipt is None:
            return defer.succeed(PaymentStatus(payment_id, PaymentStatusKind.REJECTED))
        return defer.succeed(PaymentStatus(payment_id, PaymentStatusKind.POSTED, receipt, entry[0]))


class NoStatusBiller(LedgerBiller):
    """A biller that answers no status queries (capabilities)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.capabilities = BillerCapabilities(can_reverse=self.capabilities.can_reverse, can_query_status=False)

    def status(self, payment_id):
        raise AssertionError("a biller without status queries was asked one")


def use(world, biller):
    processor = world[0]
    route = processor.route("TEL")
    processor._billers["TEL"] = type(route)(route.settings, biller)
    return (processor, world[1], biller, world[3], world[4])


def receipt_tag(answer) -> str:
    return dict(decode_tlv(answer.fields["48"]))["RN"]


def biller_receipt(engine) -> str:
    [row] = table(engine, transactions)
    return row.biller_receipt


@pytest_twisted.ensureDeferred
async def test_accepted_is_approved_and_the_receipt_waits_for_the_batch(world):
    processor, worker, biller, clock, engine = use(world, BatchBiller())
    answer = await processor.handle(payment())
    assert answer.fields["39"] == "00"  # the money is safe in the biller's intake
    assert receipt_tag(answer).startswith("IN-")
    assert state_of(engine) == "ACCEPTED" and sms(engine) == set()
    await settle_all(worker, clock, 120)  # polls: still in the intake
    assert state_of(engine) == "ACCEPTED" and sms(engine) == set()
    assert [c[0] for c in biller.calls].count("status") >= 2
    [item] = table(engine, biller_outbox_table)
    assert (item.action, item.state) == ("STATUS", "PENDING")
    biller.run_batch()
    await settle_all(worker, clock, 400)  # the back-off is capped at retry_cap (30 s here)
    assert state_of(engine) == "CONFIRMED"
    assert sms(engine) == {("receipt", "QUEUED")}
    assert biller_receipt(engine).startswith("WR-")  # the SMS carries the biller's booked receipt
    [item] = table(engine, biller_outbox_table)
    assert item.state == "DONE"


@pytest_twisted.ensureDeferred
async def test_batch_rejection_is_an_exception_without_receipt(world):
    processor, worker, biller, clock, engine = use(world, BatchBiller(reject=True))
    answer = await processor.handle(payment())
    assert answer.fields["39"] == "00"
    biller.run_batch()
    await settle_all(worker, clock, 90)
    assert state_of(engine) == "EXCEPTION"
    assert sms(engine) == set()


@pytest_twisted.ensureDeferred
async def test_reversal_of_an_accepted_payment_withdraws_it(world):
    processor, worker, biller, clock, engine = use(world, BatchBiller())
    await processor.handle(payment())
    ack = await processor.handle(reversal())
    assert ack.fields["39"] == "00"
    assert state_of(engine) == "REVERSING"
    await settle_all(worker, clock, 90)
    assert state_of(engine) == "REVERSED"
    assert biller.held() == {}
    biller.run_batch()  # the batch finds nothing to book
    assert biller.booked == {}
    assert sms(engine) == set()  # no receipt ever, so no reversal notice either


@pytest_twisted.ensureDeferred
async def test_in_doubt_payment_found_in_the_intake_is_withdrawn(world):
    processor, worker, biller, clock, engine = use(world, BatchBiller())
    biller.hold = defer.Deferred(lambda d: None)  # taken into the intake, the answer lost
    pending = processor.handle(payment())
    clock.advance(10.5)
    assert (await pending).fields["39"] == "91"
    biller.hold = None
    await settle_all(worker, clock, 60)
    assert state_of(engine) == "REVERSED"
    assert [c[0] for c in biller.calls] == ["pay", "status", "reverse"]
    assert biller.held() == {} and sms(engine) == set()


@pytest_twisted.ensureDeferred
async def test_no_status_capability_settles_an_unknown_outcome_by_reversal(world):
    processor, worker, biller, clock, engine = use(world, NoStatusBiller())
    biller.hold = defer.Deferred(lambda d: None)  # the biller records, then never answers
    pending = processor.handle(payment())
    clock.advance(10.5)
    assert (await pending).fields["39"] == "91"
    assert state_of(engine) == "IN_DOUBT"  # the switch's time to advise or reverse
    biller.hold = None
    await settle_all(worker, clock, 10)
    assert state_of(engine) == "REVERSED"
    assert [c[0] for c in biller.calls] == ["pay", "reverse"]  # never a status query
    assert biller.held() == {}


@pytest_twisted.ensureDeferred
async def test_no_status_capability_reposts_what_the_switch_advised(world):
    processor, worker, biller, clock, engine = use(world, NoStatusBiller())
    biller.hold = defer.Deferred(lambda d: None)  # the biller records, then never answers
    pending = processor.handle(payment())
    clock.advance(10.5)
    assert (await pending).fields["39"] == "91"
    biller.hold = None
    assert (await processor.handle(advice())).fields["39"] == "00"  # the switch debited the customer
    await settle_all(worker, clock, 10)
    assert state_of(engine) == "CONFIRMED"
    assert [c[0] for c in biller.calls] == ["pay", "pay"]  # re-posted, idempotent on the payment id
    assert len(biller.held()) == 1 and sms(engine) == {("receipt", "QUEUED")}


@pytest_twisted.ensureDeferred
async def test_no_status_and_no_reversal_is_an_exception_for_a_person(world):
    processor, worker, biller, clock, engine = use(world, NoStatusBiller(can_reverse=False))
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)
    assert (await pending).fields["39"] == "91"
    await settle_all(worker, clock, 10)
    assert state_of(engine) == "EXCEPTION"
    assert [c[0] for c in biller.calls] == ["pay"]


@pytest_twisted.ensureDeferred
async def test_a_status_item_for_a_biller_without_status_is_never_sent(world):
    """A payment left IN_DOUBT (with its STATUS item) before its biller lost
    status queries -- say, a configuration change -- is settled by reversal."""
    processor, worker, biller, clock, engine = world
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)
    await pending
    assert state_of(engine) == "IN_DOUBT"
    no_status = NoStatusBiller()
    no_status.ledger = biller.ledger
    use(world, no_status)
    await settle_all(worker, clock, 10)
    assert state_of(engine) == "REVERSED"
    assert [c[0] for c in no_status.calls] == ["reverse"]


@pytest_twisted.ensureDeferred
async def test_advised_in_doubt_payment_found_in_the_intake_keeps_polling_until_booked(world):
    """IN_DOUBT, the switch advises (it debited), the status query finds the
    payment in the intake: ACCEPTED -- and the STATUS item that found it is
    re-armed to poll for the batch (it must not end DONE with the payment
    left ACCEPTED for ever)."""
    processor, worker, biller, clock, engine = use(world, BatchBiller())
    biller.hold = defer.Deferred(lambda d: None)
    pending = processor.handle(payment())
    clock.advance(10.5)
    assert (await pending).fields["39"] == "91"
    biller.hold = None
    assert (await processor.handle(advice())).fields["39"] == "00"
    await settle_all(worker, clock, 10)
    assert state_of(engine) == "ACCEPTED" and sms(engine) == set()
    [item] = table(engine, biller_outbox_table)
    assert (item.action, item.state) == ("STATUS", "PENDING")
    biller.run_batch()
    await settle_all(worker, clock, 200)
    assert state_of(engine) == "CONFIRMED"
    assert sms(engine) == {("receipt", "QUEUED")}
    assert [c[0] for c in biller.calls].count("pay") == 1  # never posted again
