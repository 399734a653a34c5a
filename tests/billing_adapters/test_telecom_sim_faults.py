"""The telecom simulator's chaos options: load-test seeding and injected faults.

Each fault is checked for what it does to the money, through the real
adapter over loopback HTTP: whether the biller's ledger holds the payment
and what the gateway's side gets to see.  The settling operations
(GetPaymentStatus, ReversePayment) must stay reliable unless asked not to,
or an in-doubt payment could never be resolved.
"""
from __future__ import annotations

import argparse
import random

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from billgw.billing_adapters.interface import (
    BillerOutcomeUnknown,
    BillQuery,
    PaymentOrder,
    PaymentStatusKind,
)
from billgw.billing_adapters.telecom_sim import (
    EXTRA_BILL_AMOUNT,
    FAULT_DROP_AFTER_POST,
    FAULT_DROP_BEFORE,
    FAULT_ERROR,
    FAULT_SLOW,
    FaultOptions,
    FaultyTelecomResource,
    SlowTelecomResource,
    add_fault_arguments,
    extra_subscriber_number,
    fault_options_from_args,
    read_ledger,
)
from billing_adapters_helpers import within

pytestmark = pytest.mark.timeout(30)

LAYLA = "0791234567"


def order(payment_id: str, number: str, amount: int) -> PaymentOrder:
    return PaymentOrder(
        payment_id=payment_id, biller_code="TEL", service_code="MOBILE", billing_number=number,
        bill_number=None, amount=amount, currency="400", paid_at="2024-06-01T10:15:00Z",
    )


async def failure_of(d, *expected):
    with pytest.raises(expected) as info:
        await within(d)
    return info.value


# --- extra subscribers -----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_extra_subscribers_have_one_large_open_bill_each(start_sim, make_adapter):
    sim = await start_sim(extra_subscribers=3)
    adapter = make_adapter(sim.url)
    numbers = [extra_subscriber_number(i) for i in range(3)]
    assert numbers == ["0790000000", "0790000001", "0790000002"]
    for number in numbers:
        inquiry = await within(adapter.inquire(BillQuery("TEL", "MOBILE", number)))
        assert [b.amount_due for b in inquiry.bills] == [EXTRA_BILL_AMOUNT]
    # A fourth was not seeded.
    with pytest.raises(Exception, match="SUBSCRIBER_NOT_FOUND|UNKNOWN_BILLING_NUMBER"):
        await within(adapter.inquire(BillQuery("TEL", "MOBILE", extra_subscriber_number(3))))
    # Many partial payments fit one bill.
    for i in range(5):
        await within(adapter.pay(order(f"GW-L{i}", numbers[0], 5_000_000)))
    bill = await within(sim.simulator.bill(numbers[0]))
    assert bill.outstanding == EXTRA_BILL_AMOUNT - 5 * 5_000_000


@pytest_twisted.ensureDeferred
async def test_extra_seeding_is_idempotent_across_restarts(start_sim, make_adapter, tmp_path):
    first = await start_sim("ledger.sqlite", extra_subscribers=2)
    await within(make_adapter(first.url).pay(order("GW-R1", extra_subscriber_number(1), 12345)))
    await within(first.port.stopListening())  # the fixture closes both databases
    second = await start_sim("ledger.sqlite", extra_subscribers=2)
    bill = await within(second.simulator.bill(extra_subscriber_number(1)))
    assert bill.outstanding == EXTRA_BILL_AMOUNT - 12345  # not re-seeded to the full amount
    assert [p.payment_id for p in read_ledger(tmp_path / "ledger.sqlite")] == ["GW-R1"]


def test_extra_subscribers_out_of_range_is_refused():
    from billgw.billing_adapters.telecom_sim import ledger_create

    with pytest.raises(ValueError, match="extra_subscribers"):
        ledger_create(None, extra_subscribers=-1)


# --- choosing faults (pure) --------------------------------------------------------

def test_fault_choice_follows_the_rates_and_the_seed():
    options = FaultOptions(seed=7, slow_rate=0.1, error_rate=0.2, drop_after_post_rate=0.05, drop_before_rate=0.15)
    rng = random.Random(7)
    draws = [options.choose(rng, "PostPayment") for _ in range(20000)]
    share = {kind: draws.count(kind) / len(draws) for kind in (FAULT_SLOW, FAULT_ERROR, FAULT_DROP_AFTER_POST,
                                                               FAULT_DROP_BEFORE, None)}
    assert share[FAULT_SLOW] == pytest.approx(0.1, abs=0.01)
    assert share[FAULT_ERROR] == pytest.approx(0.2, abs=0.01)
    assert share[FAULT_DROP_AFTER_POST] == pytest.approx(0.05, abs=0.01)
    assert share[FAULT_DROP_BEFORE] == pytest.approx(0.15, abs=0.01)
    assert share[None] == pytest.approx(0.5, abs=0.015)
    # Same seed, same sequence: a chaos run can be replayed.
    again = random.Random(7)
    assert [options.choose(again, "PostPayment") for _ in range(20000)] == draws


def test_settling_operations_are_not_faulted_by_the_posting_rates():
    options = FaultOptions(error_rate=0.5, drop_before_rate=0.5, operations=("PostPayment", "GetBills"))
    rng = random.Random(1)
    for operation in ("GetPaymentStatus", "ReversePayment"):
        assert {options.choose(rng, operation) for _ in range(1000)} == {None}
    assert None not in {options.choose(rng, "GetBills") for _ in range(1000)}
    only_post = FaultOptions(error_rate=1.0)
    assert {only_post.choose(rng, "GetBills") for _ in range(100)} == {None}
    settle = FaultOptions(settle_error_rate=1.0)
    assert settle.choose(rng, "ReversePayment") == FAULT_ERROR


@pytest.mark.parametrize("kwargs", [
    {"slow_rate": 1.5},
    {"error_rate": -0.1},
    {"error_rate": 0.6, "slow_rate": 0.6},
    {"slow_seconds": 0},
    {"operations": ("ReversePayment",)},
])
def test_impossible_fault_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        FaultOptions(**kwargs)


def test_cli_arguments_build_the_options():
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    args = parser.parse_args("--fault-slow-rate 0.05 --fault-slow-seconds 12 --fault-error-rate 0.05 "
                             "--fault-drop-after-post-rate 0.05 --fault-drop-before-rate 0.02 --seed 7 "
                             "--extra-subscribers 50".split())
    assert fault_options_from_args(args) == FaultOptions(
        seed=7, slow_rate=0.05, slow_seconds=12.0, error_rate=0.05, drop_after_post_rate=0.05,
        drop_before_rate=0.02)
    assert args.extra_subscribers == 50
    assert fault_options_from_args(parser.parse_args([])) is None  # no rate: the well-behaved biller
    with pytest.raises(ValueError):
        fault_options_from_args(parser.parse_args(["--fault-error-rate", "2"]))


# --- each fault over HTTP ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_faults_and_custom_resource_are_exclusive(start_sim):
    with pytest.raises(ValueError, match="faults"):
        await start_sim(faults=FaultOptions(error_rate=1.0), resource_class=SlowTelecomResource)


@pytest_twisted.ensureDeferred
async def test_drop_before_processing_records_nothing(start_sim, make_adapter):
    sim = await start_sim(faults=FaultOptions(drop_before_rate=1.0))
    assert isinstance(sim.resource, FaultyTelecomResource)
    await failure_of(make_adapter(sim.url).pay(order("GW-F1", LAYLA, 100)), BillerOutcomeUnknown)
    assert await within(sim.simulator.postings()) == []
    assert sim.resource.fault_counts == {FAULT_DROP_BEFORE: 1}


@pytest_twisted.ensureDeferred
async def test_error_answers_500_and_records_nothing(start_sim, make_adapter):
    sim = await start_sim(faults=FaultOptions(error_rate=1.0))
    error = await failure_of(make_adapter(sim.url).pay(order("GW-F2", LAYLA, 100)), BillerOutcomeUnknown)
    assert "500" in str(error)
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_drop_after_post_records_the_payment_and_status_still_answers(start_sim, make_adapter):
    sim = await start_sim(faults=FaultOptions(drop_after_post_rate=1.0))
    adapter = make_adapter(sim.url)
    await failure_of(adapter.pay(order("GW-F3", LAYLA, 700)), BillerOutcomeUnknown)
    [posting] = await within(sim.simulator.postings())
    assert (posting.payment_id, posting.amount) == ("GW-F3", 700)
    # The settling operations are not faulted: the in-doubt payment can be resolved.
    status = await within(adapter.status("GW-F3"))
    assert (status.status, status.amount) == (PaymentStatusKind.POSTED, 700)
    reversal = await within(adapter.reverse("GW-F3"))
    assert reversal.reversed is True
    [posting] = await within(sim.simulator.postings())
    assert posting.reversed


@pytest_twisted.ensureDeferred
async def test_slow_answer_waits_on_the_injected_clock_then_posts(start_sim, make_adapter):
    clock = Clock()
    sim = await start_sim(clock=clock, faults=FaultOptions(slow_rate=1.0, slow_seconds=12))
    received = sim.resource.when_received()
    d = make_adapter(sim.url).pay(order("GW-F4", LAYLA, 900))
    await within(received)
    clock.advance(11.9)
    assert not d.called
    assert await within(sim.simulator.postings()) == []
    clock.advance(0.2)
    confirmation = await within(d)
    assert confirmation.amount == 900
    assert [p.payment_id for p in await within(sim.simulator.postings())] == ["GW-F4"]


@pytest_twisted.ensureDeferred
async def test_slow_answer_is_still_posted_when_the_gateway_gave_up(start_sim, make_adapter):
    """The biller does not know the gateway timed out: the IN_DOUBT case."""
    clock = Clock()
    sim = await start_sim(clock=clock, faults=FaultOptions(slow_rate=1.0, slow_seconds=12))
    abandoned = sim.resource.when_abandoned()
    received = sim.resource.when_received()
    d = make_adapter(sim.url).pay(order("GW-F5", LAYLA, 300))
    await within(received)
    d.cancel()
    await failure_of(d, CancelledError)  # what the gateway's timeout sees
    await within(abandoned)
    clock.advance(12)
    # advance() ran the delayed answer up to its ledger call, so the posting
    # is already queued on the simulator's one DB thread: a query queued
    # after it sees it (no polling).
    posted = await within(sim.simulator.postings())
    assert [p.payment_id for p in posted] == ["GW-F5"]
