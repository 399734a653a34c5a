"""The water adapter against its simulator: the biller's own tables, on
SQLite and (with BILLGW_TEST_PG_URL) PostgreSQL, each misbehaving variant."""
from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import CancelledError

from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerUnavailable,
    BillQuery,
    BillStatus,
    DeclineReason,
    PaymentAccepted,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatusKind,
)
from billgw.billing_adapters.registry import AdapterConfigError, BuildContext, build_adapter, check_adapter
from billgw.billing_adapters.water.sim import (
    SIM_MAPPING,
    DownWaterBiller,
    RejectingWaterBiller,
    SlowWaterBiller,
    WaterBillerSim,
    sim_settings,
)

from billing_adapters_helpers import within
from water_helpers import WATER_DB_KINDS, drop_schema, water_db

# The same tables under another biller's names and codes: the mapping, not
# the simulator's defaults, is what the adapter follows.
OTHER_MAPPING = {
    "tables": {"bills": "FACTURAS", "intake": "PAGOS_ENTRADA"},
    "bill_columns": {"account": "CUENTA", "bill_number": "FACTURA", "amount_due": "SALDO", "due_date": "VENCE",
                     "status": "ESTADO"},
    "bill_status_codes": {"A": "NEW", "PP": "PARTIALLY_PAID", "C": "PAID", "V": "EXPIRED"},
    "intake_columns": {"id": "NUM", "payment_id": "REF_PASARELA", "account": "CUENTA", "bill_number": "FACTURA",
                       "amount": "IMPORTE", "paid_at": "FECHA", "status": "ESTADO", "receipt": "RECIBO"},
    "intake_codes": {"pending": "0", "posted": "1", "rejected": "9", "withdrawn": "8"},
}


@pytest.fixture(params=WATER_DB_KINDS)
def water(request, tmp_path):
    url, schema = water_db(request.param, tmp_path)
    made = []

    def make(cls=WaterBillerSim, mapping=None):
        sim = cls(url, mapping, schema=schema)
        if not made:
            sim.create()
        made.append(sim)
        return sim

    make.url, make.schema = url, schema
    yield make
    for sim in made:
        sim.close()
    drop_schema(url, schema)


@pytest_twisted.async_yield_fixture
async def adapters(log):
    built = []

    def make(water, mapping=None, **extra):
        settings = sim_settings(water.url, mapping, **extra)
        if water.schema:
            settings["schema"] = water.schema
        adapter = build_adapter("water", reactor, settings, log, context=BuildContext(biller_code="WAT"))
        adapter.start()
        built.append(adapter)
        return adapter

    yield make
    for adapter in built:
        await within(adapter.stop())


def order(payment_id: str, account: str = "3000000001", amount: int = 15_750, bill: str | None = None):
    return PaymentOrder(payment_id=payment_id, biller_code="WAT", service_code="WATER", billing_number=account,
                        bill_number=bill, amount=amount, currency="400", paid_at="2026-12-06T08:00:00+00:00")


def batch(sim):
    return within(threads.deferToThread(sim.run_batch))


@pytest_twisted.ensureDeferred
async def test_inquiry_reads_the_billers_bills(water, adapters):
    water()
    adapter = adapters(water)
    result = await within(adapter.inquire(BillQuery("WAT", "WATER", "3000000002")))
    assert result.customer_name == "Yousef Amin"
    assert [(b.bill_number, b.amount_due, b.due_date, b.status) for b in result.bills] == [
        ("WB3000000002-10", 8_000, "20261031", BillStatus.NEW),
        ("WB3000000002-11", 9_500, "20261130", BillStatus.NEW)]
    paid = await within(adapter.inquire(BillQuery("WAT", "WATER", "3000000003")))
    assert paid.bills[0].status is BillStatus.PAID
    with pytest.raises(BillerDeclined) as unknown:
        await within(adapter.inquire(BillQuery("WAT", "WATER", "3999999999")))
    assert unknown.value.reason is DeclineReason.UNKNOWN_BILLING_NUMBER
    with pytest.raises(BillerDeclined) as no_bill:
        await within(adapter.inquire(BillQuery("WAT", "WATER", "3000000002", "WB-NOPE")))
    assert no_bill.value.reason is DeclineReason.BILL_NOT_FOUND


@pytest_twisted.ensureDeferred
async def test_payment_is_accepted_then_recorded_by_the_batch(water, adapters):
    sim = water()
    adapter = adapters(water)
    accepted = await within(adapter.pay(order("p-1", "3000000002", 8_000, "WB3000000002-10")))
    assert isinstance(accepted, PaymentAccepted)
    assert (accepted.amount, accepted.bill_number) == (8_000, "WB3000000002-10")
    again = await within(adapter.pay(order("p-1", "3000000002", 8_000, "WB3000000002-10")))
    assert again == accepted  # the repeat finds its row: one intake row, the same reference
    assert len(sim.intake_rows()) == 1
    # Waiting in the intake: held, not booked, and no longer due.
    status = await within(adapter.status("p-1"))
    assert (status.status, status.receipt_number) == (PaymentStatusKind.ACCEPTED, accepted.intake_reference)
    bills = await within(adapter.inquire(BillQuery("WAT", "WATER", "3000000002")))
    assert [b.amount_due for b in bills.bills] == [0, 9_500]
    assert (await batch(sim)).posted == 1
    status = await within(adapter.status("p-1"))
    assert status.status is PaymentStatusKind.POSTED and status.receipt_number.startswith("WR")
    repeat = await within(adapter.pay(order("p-1", "3000000002", 8_000, "WB3000000002-10")))
    assert isinstance(repeat, PaymentConfirmation) and repeat.receipt_number == status.receipt_number
    [entry] = await within(threads.deferToThread(adapter.read_ledger))
    assert (entry.payment_id, entry.amount, entry.pending, entry.held) == ("p-1", 8_000, False, True)


@pytest_twisted.ensureDeferred
async def test_the_intake_refuses_what_it_cannot_take(water, adapters):
    sim = water()
    adapter = adapters(water)
    await within(adapter.pay(order("p-2")))
    for bad, reason in ((order("p-2", amount=1), DeclineReason.OTHER),  # same id, other payment
                        (order("p-3", "3000000003", 100, "WB3000000003-11"), DeclineReason.BILL_ALREADY_PAID),
                        (order("p-4", "3000000004", 100, "WB3000000004-08"), DeclineReason.NO_BILL_DUE),
                        (order("p-5", "3999999999"), DeclineReason.UNKNOWN_BILLING_NUMBER)):
        with pytest.raises(BillerDeclined) as declined:
            await within(adapter.pay(bad))
        assert declined.value.reason is reason
    assert [r["payment_id"] for r in sim.intake_rows()] == ["p-2"]


@pytest_twisted.ensureDeferred
async def test_reversal_withdraws_a_pending_row_and_records_a_booked_one(water, adapters):
    sim = water()
    adapter = adapters(water)
    await within(adapter.pay(order("p-w")))
    withdrawn = await within(adapter.reverse("p-w"))
    assert withdrawn.reversed and (await within(adapter.reverse("p-w"))).reversed  # idempotent
    assert (await batch(sim)).posted == 0  # the batch never books a withdrawn row
    assert (await within(adapter.status("p-w"))).status is PaymentStatusKind.REVERSED

    await within(adapter.pay(order("p-b", "3000000005", 22_000)))
    await batch(sim)
    booked = await within(adapter.reverse("p-b"))
    assert booked.reversed
    assert (await within(adapter.status("p-b"))).status is PaymentStatusKind.REVERSED

    never = await within(adapter.reverse("p-never"))
    assert not never.reversed
    with pytest.raises(BillerDeclined):  # a late payment under a reversed id is refused
        await within(adapter.pay(order("p-never", "3000000002", 9_500, "WB3000000002-11")))
    ledger = {e.payment_id: e for e in await within(threads.deferToThread(adapter.read_ledger))}
    assert sorted(ledger) == ["p-b", "p-w"]  # the placeholder of p-never is no payment
    assert ledger["p-w"].reversed and ledger["p-b"].reversed


@pytest_twisted.ensureDeferred
async def test_other_names_and_codes_by_mapping_alone(water, adapters):
    sim = water(mapping=OTHER_MAPPING)
    adapter = adapters(water, OTHER_MAPPING)
    accepted = await within(adapter.pay(order("p-m", "3000000002", 9_500, "WB3000000002-11")))
    assert isinstance(accepted, PaymentAccepted)
    assert [r["status"] for r in sim.intake_rows()] == ["0"]
    await batch(sim)
    assert [r["status"] for r in sim.intake_rows()] == ["1"]
    # No reversals table in this mapping: a booked payment cannot be reversed.
    with pytest.raises(BillerDeclined) as refused:
        await within(adapter.reverse("p-m"))
    assert refused.value.reason is DeclineReason.NOT_PERMITTED


@pytest_twisted.ensureDeferred
async def test_rejecting_batch(water, adapters):
    sim = water(RejectingWaterBiller)
    adapter = adapters(water)
    await within(adapter.pay(order("p-r")))
    assert (await batch(sim)).rejected == 1
    assert (await within(adapter.status("p-r"))).status is PaymentStatusKind.REJECTED
    [entry] = await within(threads.deferToThread(adapter.read_ledger))
    assert entry.rejected and not entry.held
    assert not (await within(adapter.reverse("p-r"))).reversed  # nothing held to undo


@pytest_twisted.ensureDeferred
async def test_locked_biller_answers_unavailable_and_nothing_is_taken(water, adapters):
    sim = water(SlowWaterBiller)
    adapter = adapters(water, lock_timeout=0.2)
    release, held = threading.Event(), threading.Event()

    def hold():
        with sim.locked():
            held.set()
            release.wait(30)

    holding = threads.deferToThread(hold)
    await within(threads.deferToThread(held.wait, 30))
    try:
        with pytest.raises(BillerUnavailable):
            await within(adapter.pay(order("p-l")))
    finally:
        release.set()
        await within(holding)
    assert sim.intake_rows() == []
    assert (await within(adapter.status("p-l"))).status is PaymentStatusKind.NOT_FOUND


@pytest_twisted.ensureDeferred
async def test_a_caller_that_gives_up_on_a_slow_biller_leaves_the_outcome_to_status(water, adapters):
    """The caller's timeout cancels the call, but the insert still waits for
    the lock and commits after: why a timeout is IN_DOUBT, never a decline."""
    sim = water(SlowWaterBiller)
    adapter = adapters(water, lock_timeout=20.0)
    release, held = threading.Event(), threading.Event()

    def hold():
        with sim.locked():
            held.set()
            release.wait(30)

    holding = threads.deferToThread(hold)
    await within(threads.deferToThread(held.wait, 30))
    call = adapter.pay(order("p-s"))
    call.cancel()
    with pytest.raises(CancelledError):
        await call
    release.set()
    await within(holding)
    await within(adapter.transport.drained())
    assert (await within(adapter.status("p-s"))).status is PaymentStatusKind.ACCEPTED


@pytest_twisted.ensureDeferred
async def test_down_biller_is_unavailable_until_it_is_back(water, adapters):
    sim = water(DownWaterBiller)
    adapter = adapters(water, connect_timeout=2.0)
    await within(threads.deferToThread(sim.down))
    try:
        with pytest.raises(BillerUnavailable):
            await within(adapter.pay(order("p-d")))
        with pytest.raises(BillerUnavailable):
            await within(adapter.inquire(BillQuery("WAT", "WATER", "3000000001")))
    finally:
        await within(threads.deferToThread(sim.up))
    assert isinstance(await within(adapter.pay(order("p-d"))), PaymentAccepted)


@pytest_twisted.ensureDeferred
async def test_stopped_adapter_refuses_at_once(water, adapters):
    water()
    adapter = adapters(water)
    await within(adapter.stop())
    with pytest.raises(BillerUnavailable):
        await within(adapter.pay(order("p-x")))


@pytest.mark.parametrize("change, key", [
    (lambda s: s["intake_columns"].update(paymnt_id="X"), "settings.intake_columns.paymnt_id"),
    (lambda s: s["intake_columns"].pop("payment_id"), "settings.intake_columns.payment_id"),
    (lambda s: s["tables"].update(intake="PAY; DROP TABLE x"), "settings.tables.intake"),
    (lambda s: s["intake_codes"].update(posted="N"), "settings.intake_codes"),
    (lambda s: s["tables"].pop("reversals"), "settings.tables.reversals"),
    (lambda s: s.pop("reversal_columns"), "settings.reversal_columns"),
    (lambda s: s["bill_status_codes"].update(O="OPEN"), "settings.bill_status_codes.O"),
    (lambda s: s.update(url=42), "settings.url"),
])
def test_mapping_mistakes_are_named_by_key(change, key):
    import copy

    settings = copy.deepcopy(sim_settings("sqlite:///water.sqlite", SIM_MAPPING))
    change(settings)
    with pytest.raises(AdapterConfigError) as error:
        check_adapter("water", settings)
    assert error.value.key == key
