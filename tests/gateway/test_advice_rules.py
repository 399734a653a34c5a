"""Advices obey the same local rules as payments, and a reversed payment is
never answered "approved" again.

An advice (0220) says the switch debited the customer.  When the payment
breaks the service's own rules (here: below the 0.100 JOD minimum), the
gateway must neither post it outside the rules nor drop the advice: the
advice is acknowledged (0230 00, so the switch stops repeating) and the
payment becomes an EXCEPTION for a person to refund -- whether the advice
comes before the 0200, while the 0200 is being declined, after the decline,
or after a crash left the 0200 unfinished.
"""
import pytest
import pytest_twisted
from twisted.internet import defer

from billgw.billing_adapters.interface import BillerUnavailable, PaymentConfirmation
from billgw.gateway.machine import Event
from billgw.gateway.schema import transactions
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.messages import decode_request, encode_fields

from settlement_world import (  # noqa: F401 (world is a fixture)
    LedgerBiller,
    advice,
    fields,
    payment,
    reversal,
    settle_all,
    state_of,
    table,
    world,
)

TOO_LITTLE = 50  # 0.050 JOD; the MOBILE service's minimum is 0.100


class Gate:
    """Wraps the journal's pool: the next run of the named operation waits
    until the test opens the gate, so another message can come in between."""

    def __init__(self, journal, operation: str, event: Event | None = None):
        self._pool = journal._pool
        self._inner_run = self._pool.run
        self._operation, self._event = operation, event
        self.opened = defer.Deferred()
        self.reached = False
        self._pool.run = self._run

    def _run(self, fn, *args, **kwargs):
        wanted = fn.__name__ == self._operation and (self._event is None or self._event in args)
        if self.reached or not wanted:
            return self._inner_run(fn, *args, **kwargs)
        self.reached = True
        return self.opened.addCallback(lambda _: self._inner_run(fn, *args, **kwargs))

    def open(self):
        self._pool.run = self._inner_run
        self.opened.callback(None)


def row(engine):
    [txn] = table(engine, transactions)
    return txn


@pytest_twisted.ensureDeferred
async def test_advice_while_the_0200_is_declined_locally_is_an_exception(world):
    processor, worker, biller, clock, engine = world
    gate = Gate(processor._journal, "apply_event", Event.NOT_POSTED)
    pending = processor.handle(payment(amount=TOO_LITTLE))
    assert gate.reached and not pending.called
    ack = await processor.handle(advice(amount=TOO_LITTLE))
    gate.open()
    declined = await pending
    assert (declined.fields["39"], ack.mti, ack.fields["39"]) == ("13", "0230", "00")
    await settle_all(worker, clock, 60)
    txn = row(engine)
    assert (txn.state, txn.advice_received, txn.local_problem) == ("EXCEPTION", True, "invalid_amount")
    assert biller.calls == [] and biller.held() == {}


@pytest_twisted.ensureDeferred
async def test_advice_after_the_local_decline_is_an_exception_not_a_posting(world):
    processor, worker, biller, clock, engine = world
    assert (await processor.handle(payment(amount=TOO_LITTLE))).fields["39"] == "13"
    ack = await processor.handle(advice(amount=TOO_LITTLE))
    assert ack.fields["39"] == "00"
    repeat = await processor.handle(advice(mti="0221", amount=TOO_LITTLE))
    assert repeat.fields["39"] == "00"
    await settle_all(worker, clock, 60)
    assert row(engine).state == "EXCEPTION"
    assert biller.calls == [] and biller.held() == {}
    # The 0200 repeated still gets its decline, never a late approval.
    assert (await processor.handle(payment(amount=TOO_LITTLE))).fields["39"] == "13"


@pytest_twisted.ensureDeferred
async def test_advice_before_any_0200_that_breaks_the_rules_is_an_exception(world):
    processor, worker, biller, clock, engine = world
    ack = await processor.handle(advice(amount=TOO_LITTLE))
    assert ack.fields["39"] == "00"
    await settle_all(worker, clock, 60)
    assert row(engine).state == "EXCEPTION"
    assert biller.calls == []
    assert (await processor.handle(payment(amount=TOO_LITTLE))).fields["39"] != "00"


@pytest_twisted.ensureDeferred
async def test_advice_for_a_0200_a_crash_left_received_is_checked_by_the_recovery(world):
    """The 0200 was journaled (with its rule verdict) and the process died
    before declining it; the advice and then the recovery sweep find it."""
    processor, worker, biller, clock, engine = world
    gate = Gate(processor._journal, "apply_event", Event.NOT_POSTED)
    processor.handle(payment(amount=TOO_LITTLE))  # never finishes: the "crash"
    assert gate.reached
    processor._in_flight.clear()  # the process that held it is gone
    assert (await processor.handle(advice(amount=TOO_LITTLE))).fields["39"] == "00"
    assert row(engine).state == "RECEIVED"
    await settle_all(worker, clock, 60)  # past recovery's stale_after
    txn = row(engine)
    assert (txn.state, txn.advice_received) == ("EXCEPTION", True)
    assert biller.calls == []


@pytest_twisted.ensureDeferred
async def test_advice_within_the_rules_after_a_biller_decline_is_still_posted(world):
    """Only the gateway's own rules bar an advice; a decline by the biller
    (whose 0210 never reached the switch) is completed as before."""
    processor, worker, biller, clock, engine = world
    biller.hold = defer.fail(BillerUnavailable("down"))
    assert (await processor.handle(payment())).fields["39"] == "91"
    biller.hold = None
    assert row(engine).state == "DECLINED"
    assert (await processor.handle(advice())).fields["39"] == "00"
    await settle_all(worker, clock, 5)
    assert row(engine).state == "CONFIRMED"
    assert list(biller.held().values()) == [12500]


@pytest.mark.parametrize("how", ["confirmed_then_reversed", "reversed_in_flight", "reversed_first"])
@pytest_twisted.ensureDeferred
async def test_a_repeat_of_a_reversed_0200_is_never_approved(world, how):
    processor, worker, biller, clock, engine = world
    if how == "confirmed_then_reversed":
        first = await processor.handle(payment())
        assert first.fields["39"] == "00" and "38" in first.fields
        assert (await processor.handle(reversal())).fields["39"] == "00"
    elif how == "reversed_in_flight":
        biller.hold = defer.Deferred()
        pending = processor.handle(payment())
        assert (await processor.handle(reversal())).fields["39"] == "00"
        biller.hold.callback(PaymentConfirmation(row(engine).id, "R-1", 12500))
        assert (await pending).fields["39"] != "00"
    else:
        assert (await processor.handle(reversal())).fields["39"] == "00"
        assert (await processor.handle(payment())).fields["39"] == "12"
    await settle_all(worker, clock, 5)
    repeat = await processor.handle(payment())
    assert (repeat.mti, repeat.fields["39"]) == ("0210", "12")
    assert "38" not in repeat.fields and "48" not in repeat.fields
    assert biller.held() == {}


@pytest.mark.parametrize("bill_in_advice", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_payment_completed_from_its_advice_keeps_its_bill_number(world, bill_in_advice):
    processor, worker, biller, clock, engine = world
    chosen = "B-2026-11"
    original_pay = LedgerBiller.pay

    def pay(self, order):  # the biller names the bill when the advice does not
        d = original_pay(self, order)
        return d.addCallback(lambda c: type(c)(c.payment_id, c.receipt_number, c.amount,
                                               order.bill_number or chosen))

    biller.pay = pay.__get__(biller)
    bill = BillRequestData("TEL", "MOBILE", "0791234567", bill_number="B-2026-10" if bill_in_advice else None,
                           msisdn="962791234567", language="en")
    ack = await processor.handle(decode_request(encode_fields("0220", fields(**{"48": bill.to_tlv()}))))
    assert ack.fields["39"] == "00"
    await settle_all(worker, clock, 5)
    txn = row(engine)
    assert txn.state == "CONFIRMED"
    assert txn.bill_number == ("B-2026-10" if bill_in_advice else chosen)
