"""The electricity adapter against the host simulator over real loopback
sockets (port 0): the calls, idempotent payments, several requests on one
link, and each misbehaving host -- with what it means for the money.

Time on the link (request timeouts, heartbeats, reconnects) runs on a Clock
the test advances; the bytes go over real sockets."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from billgw.billing_adapters.electricity import sim as hosts
from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillQuery,
    DeclineReason,
    HealthState,
    PaymentOrder,
    PaymentStatusKind,
)
from billgw.billing_adapters.registry import BuildContext, build_adapter, ledger_reader
from billing_adapters_helpers import LOOPBACK, within

pytestmark = pytest.mark.timeout(30)

PAYMENT_ID = "9f1c2ab4e0d34c8d9a6f2b1e7c3d5a40"


def order(account="2000000001", amount=23_450, payment_id=PAYMENT_ID, bill=None) -> PaymentOrder:
    return PaymentOrder(payment_id=payment_id, biller_code="ELE", service_code="HOME", billing_number=account,
                        bill_number=bill, amount=amount, currency="400", paid_at="2026-12-02T08:00:00Z")


def query(account: str) -> BillQuery:
    return BillQuery("ELE", "HOME", account)


async def until(condition, seconds: float = 10.0) -> None:
    """Wait (bounded) for something the other end of a real socket does."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met in time")


class World:
    def __init__(self, tmp_path, log):
        self.tmp_path, self.log = tmp_path, log
        self.clock = task.Clock()
        self.stack = []

    async def host(self, host_class=hosts.ElectricityHost, **options):
        port, host = await within(defer.ensureDeferred(hosts.listen_electricity_sim(
            reactor, LOOPBACK, db_path=str(self.tmp_path / "host.sqlite"), host_class=host_class, **options)))
        self.stack.append(lambda: defer.maybeDeferred(port.stopListening))
        self.stack.append(host.close)
        self.port, self.sim = port, host
        return host

    def settings(self, **extra):
        return {"host": "127.0.0.1", "port": self.port.getHost().port, "user": "BILLGW", "password": "secret",
                "service_codes": {"HOME": "ELECTRIC"}, "request_timeout": 5.0, "heartbeat_interval": 30.0,
                "heartbeat_timeout": 5.0, "ledger": str(self.tmp_path / "host.sqlite"), **extra}

    async def adapter(self, start=True, **extra):
        adapter = build_adapter("electricity", reactor, self.settings(**extra), self.log,
                                context=BuildContext(biller_code="ELE", clock=self.clock))
        self.stack.append(adapter.stop)
        if start:
            await within(adapter.start())
        return adapter

    async def close(self):
        for step in reversed(self.stack):
            await within(defer.maybeDeferred(step))


@pytest.fixture
def world(tmp_path, log):
    w = World(tmp_path, log)
    yield w
    pytest_twisted.blockon(defer.ensureDeferred(w.close()))


async def failure_of(d):
    try:
        result = await within(d)
    except Exception as exc:  # noqa: BLE001 -- the test inspects it
        return exc
    raise AssertionError(f"expected a failure, got {result!r}")


@pytest_twisted.ensureDeferred
async def test_inquiry_answers_the_open_bills_oldest_first(world):
    await world.host()
    adapter = await world.adapter()
    assert adapter.health().state is HealthState.UP
    result = await within(adapter.inquire(query("2000000002")))
    assert result.customer_name == "Omar Saleh"
    assert [(b.bill_number, b.amount_due, b.due_date, b.allow_partial, b.min_amount, b.currency)
            for b in result.bills] == [("EB-2000000002-1", 15_000, "20260228", True, 5_000, "400"),
                                       ("EB-2000000002-2", 12_250, "20260331", True, 5_000, "400")]
    credit = await failure_of(adapter.inquire(query("2000000003")))  # a credit: nothing due
    assert isinstance(credit, BillerDeclined) and credit.reason is DeclineReason.NO_BILL_DUE
    unknown = await failure_of(adapter.inquire(query("2999999999")))
    assert isinstance(unknown, BillerDeclined) and unknown.reason is DeclineReason.UNKNOWN_BILLING_NUMBER
    asked = len(world.sim.requests)
    too_long = await failure_of(adapter.inquire(query("2" * 17)))  # cannot be one of the host's accounts
    assert isinstance(too_long, BillerDeclined) and too_long.reason is DeclineReason.UNKNOWN_BILLING_NUMBER
    assert isinstance(await failure_of(adapter.pay(order("2" * 17))), BillerDeclined)
    assert len(world.sim.requests) == asked  # declined without asking


@pytest_twisted.ensureDeferred
async def test_a_payment_is_recorded_once_whatever_the_repeats_then_reversed(world):
    host = await world.host()
    adapter = await world.adapter()
    first = await within(adapter.pay(order()))
    again = await within(adapter.pay(order()))
    assert first.receipt_number.startswith("ER") and again.receipt_number == first.receipt_number
    assert (first.amount, first.settled[0].bill_number, first.settled[0].amount) == (23_450, "EB-2000000001-1", 23_450)
    [recorded] = await within(host.payments())
    assert (recorded.payment_id, recorded.amount, recorded.receipt) == (PAYMENT_ID, 23_450, first.receipt_number)
    other = await failure_of(adapter.pay(order(amount=1_000)))  # the same id with other content
    assert isinstance(other, BillerDeclined) and other.reason is DeclineReason.OTHER and "E108" in other.detail
    status = await within(adapter.status(PAYMENT_ID))
    assert (status.status, status.receipt_number, status.amount) == (PaymentStatusKind.POSTED, first.receipt_number,
                                                                      23_450)
    reversal = await within(adapter.reverse(PAYMENT_ID))
    assert reversal.reversed and (await within(adapter.reverse(PAYMENT_ID))).reversed  # idempotent
    assert (await within(adapter.status(PAYMENT_ID))).status is PaymentStatusKind.REVERSED
    never = await within(adapter.reverse("never-paid-0001"))
    assert not never.reversed
    assert (await within(adapter.status("never-paid-0001"))).status is PaymentStatusKind.NOT_FOUND
    # A reversal that overtook its payment keeps the payment from being recorded.
    late = await failure_of(adapter.pay(order("2000000002", 15_000, payment_id="never-paid-0001")))
    assert isinstance(late, BillerDeclined) and "E108" in late.detail
    # billgw audit reads the host's ledger through the kind's reader, offline.
    [entry] = ledger_reader("electricity", world.settings())(None)
    assert (entry.payment_id, entry.amount, entry.receipt_number, entry.reversed) == (
        PAYMENT_ID, 23_450, first.receipt_number, True)


@pytest_twisted.ensureDeferred
async def test_amount_rules_are_the_hosts_declines(world):
    await world.host()
    adapter = await world.adapter()
    partial = await failure_of(adapter.pay(order(amount=20_000)))  # that bill takes no part payments
    assert isinstance(partial, BillerDeclined) and partial.reason is DeclineReason.INVALID_AMOUNT
    paid = await within(adapter.pay(order("2000000002", 20_000, payment_id="p-oldest-first")))
    assert [(s.bill_number, s.amount) for s in paid.settled] == [("EB-2000000002-1", 15_000),
                                                                  ("EB-2000000002-2", 5_000)]


@pytest_twisted.ensureDeferred
async def test_several_payments_in_flight_on_the_one_link(world):
    host = await world.host(extra_accounts=8)
    adapter = await world.adapter()
    orders = [order(f"29{i:08d}", 10_000, payment_id=f"pay-{i:04d}") for i in range(8)]
    results = await within(defer.gatherResults([adapter.pay(o) for o in orders]))
    assert [r.payment_id for r in results] == [o.payment_id for o in orders]
    assert len({r.receipt_number for r in results}) == 8
    assert len(host.connections) == 1 and host.requests.count("SGON") == 1
    assert sorted(p.payment_id for p in await within(host.payments())) == sorted(o.payment_id for o in orders)


@pytest_twisted.ensureDeferred
async def test_fixed_length_records_in_another_code_page(world):
    await world.host(framing="fixed", record_length=400, code_page="cp500")
    adapter = await world.adapter(framing="fixed", record_length=400, code_page="cp500")
    assert (await within(adapter.pay(order()))).amount == 23_450
    assert adapter.capabilities.extra["code_page"] == "cp500"


@pytest_twisted.ensureDeferred
async def test_a_slow_host_leaves_the_payment_in_doubt(world):
    host = await world.host(hosts.SlowHost, delay=None)
    adapter = await world.adapter()
    d = adapter.pay(order())
    await until(lambda: "PAYR" in host.requests)
    world.clock.advance(5.0)  # request_timeout
    unknown = await failure_of(d)
    assert isinstance(unknown, BillerOutcomeUnknown) and "no answer to PAYR" in str(unknown)
    assert [p.payment_id for p in await within(host.payments())] == [PAYMENT_ID]  # why it is IN_DOUBT
    # The caller's own timeout cancels: CancelledError, and the link stays up.
    cancelled = adapter.pay(order(payment_id="p-cancelled"))
    cancelled.cancel()
    assert isinstance(await failure_of(cancelled), defer.CancelledError)
    assert adapter.health().state is HealthState.UP


@pytest_twisted.ensureDeferred
async def test_a_host_that_refuses_connections_is_unavailable(world):
    await world.host(hosts.DownHost)
    adapter = await world.adapter(start=False)
    started = adapter.start()
    world.clock.advance(5.0)  # start_wait = connect_timeout: start() does not hold the gateway up
    await within(started)
    failure = await failure_of(adapter.pay(order()))
    assert isinstance(failure, BillerUnavailable)  # never sent: a clean 91
    assert adapter.health().state is HealthState.DOWN


@pytest_twisted.ensureDeferred
async def test_a_host_answering_errors_is_outcome_unknown_unless_mapped(world):
    host = await world.host(hosts.ErrorHost)
    adapter = await world.adapter()
    failure = await failure_of(adapter.pay(order()))
    assert isinstance(failure, BillerOutcomeUnknown) and "S999" in str(failure)
    assert isinstance(await failure_of(adapter.status(PAYMENT_ID)), BillerOutcomeUnknown)
    assert await within(host.payments()) == []
    mapped = await world.adapter(error_codes={"S999": "other"})
    declined = await failure_of(mapped.pay(order()))
    assert isinstance(declined, BillerDeclined) and declined.reason is DeclineReason.OTHER


@pytest_twisted.ensureDeferred
async def test_recorded_then_dropped_is_resolved_by_status_after_the_reconnect(world):
    host = await world.host(hosts.RecordThenDropHost)
    adapter = await world.adapter()
    failure = await failure_of(adapter.pay(order()))
    assert isinstance(failure, BillerOutcomeUnknown) and "link lost" in str(failure)
    assert adapter.health().state is HealthState.DOWN
    await until(lambda: world.clock.getDelayedCalls())  # the reconnect is scheduled
    world.clock.advance(2.0)  # reconnect_initial (1 s) and its jitter (under 1 s)
    await until(lambda: adapter.health().state is HealthState.UP)
    status = await within(adapter.status(PAYMENT_ID))
    assert status.status is PaymentStatusKind.POSTED and status.amount == 23_450
    assert host.requests.count("SGON") == 2


@pytest_twisted.ensureDeferred
async def test_a_host_refusing_reversals_is_a_case_for_a_person(world):
    await world.host(hosts.NoReversalHost)
    adapter = await world.adapter()
    await within(adapter.pay(order()))
    refused = await failure_of(adapter.reverse(PAYMENT_ID))
    assert isinstance(refused, BillerDeclined) and refused.reason is DeclineReason.NOT_PERMITTED


@pytest_twisted.ensureDeferred
async def test_an_answer_sent_twice_is_used_once(world, log_capture):
    host = await world.host(hosts.TwiceHost)
    adapter = await world.adapter()
    confirmation = await within(adapter.pay(order()))
    await until(lambda: log_capture.events("record_link_unmatched_answer"))
    assert len(await within(host.payments())) == 1
    assert (await within(adapter.status(PAYMENT_ID))).receipt_number == confirmation.receipt_number


@pytest_twisted.ensureDeferred
async def test_a_garbled_packed_amount_is_outcome_unknown_never_a_wrong_amount(world):
    host = await world.host(hosts.GarbleHost, garble="packed")
    adapter = await world.adapter()
    failure = await failure_of(adapter.pay(order()))
    assert isinstance(failure, BillerOutcomeUnknown) and "PAYA.amount" in str(failure)
    assert len(await within(host.payments())) == 1  # recorded: the status query settles it
    assert (await within(adapter.status(PAYMENT_ID))).status is PaymentStatusKind.POSTED


@pytest_twisted.ensureDeferred
async def test_garbled_ebcdic_text_is_outcome_unknown(world):
    await world.host(hosts.GarbleHost, garble="ebcdic")
    adapter = await world.adapter()
    failure = await failure_of(adapter.inquire(query("2000000001")))
    assert isinstance(failure, BillerOutcomeUnknown) and "INQA.customer" in str(failure)
    assert isinstance(await failure_of(adapter.pay(order())), BillerOutcomeUnknown)


@pytest_twisted.ensureDeferred
async def test_wrong_credentials_keep_the_link_down(world, log_capture):
    log_capture.allow_errors = True  # a refused sign-on is an error an operator must see
    host = await world.host(password="other")
    adapter = await world.adapter(start=False)
    started = adapter.start()
    await until(lambda: "SGON" in host.requests)
    world.clock.advance(5.0)
    await within(started)
    assert isinstance(await failure_of(adapter.pay(order())), BillerUnavailable)
    assert [e["reason"] for e in log_capture.events("record_link_sign_on_refused")] == [
        "result 91: INVALID USER OR PASSWORD"]
