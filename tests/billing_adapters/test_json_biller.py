"""The ``json`` adapter, built from configuration, against the JSON biller
simulator over real loopback HTTP: bills with their status, dates and
partial-payment rules; payments recorded once under the gateway's id;
status and reversal; each misbehaving variant; the ledger read back through
the reconciliation listing."""
from __future__ import annotations

import functools

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.web.http_headers import Headers

from billgw.billing_adapters.guarded import GuardedAdapter
from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerOutcomeUnknown,
    BillQuery,
    BillStatus,
    CapabilityMissing,
    DeclineReason,
    LedgerUnavailable,
    PaymentOrder,
    PaymentStatusKind,
)
from billgw.billing_adapters.json_biller import codec
from billgw.billing_adapters.json_biller.adapter import judge, read_json_ledger
from billgw.billing_adapters.json_biller.ledger import seed_ledger
from billgw.billing_adapters.json_biller.sim import (
    DownJsonBiller,
    ErrorJsonBiller,
    GarbageJsonBiller,
    RecordThenDropJsonBiller,
    SlowJsonBiller,
    TwiceJsonBiller,
    listen_json_biller,
)
from billgw.billing_adapters.registry import BuildContext, build_adapter
from billgw.billing_adapters.transports.http import HttpAnswer
from billing_adapters_helpers import LOOPBACK, within

pytestmark = pytest.mark.timeout(30)

NADIA = "1000000001"  # one bill of 12.500, partial allowed
YOUSEF = "1000000002"  # 8.000 (partial, minimum 1.000) then 9.500 (in full only)
HUDA = "1000000003"  # her only bill is paid
KARIM = "1000000004"  # his bill expired
NOW = 1_796_000_000.0  # 2026-11-30, for the expiry rules


def query(number, bill_number=None, service="HOME"):
    return BillQuery("WAT", service, number, bill_number)


def order(payment_id, number, amount, bill_number=None, currency="400"):
    return PaymentOrder(payment_id=payment_id, biller_code="WAT", service_code="HOME", billing_number=number,
                        bill_number=bill_number, amount=amount, currency=currency,
                        paid_at="2026-11-30T10:00:00Z")


class RunningJsonSim:
    def __init__(self, port, resource):
        self.port = port
        self.resource = resource

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}/api/v1"

    @property
    def ledger(self):
        return self.resource.ledger


@pytest.fixture
def sim_clock():
    clock = Clock()
    clock.advance(NOW)
    return clock


@pytest_twisted.async_yield_fixture
async def start_json(log, sim_clock):
    running = []

    async def start(resource_class=None, *, reversal_policy="allowed", service="WATER", prefix="WB", ledger=None):
        if ledger is None:
            ledger = seed_ledger(service, bill_prefix=prefix, reversal_policy=reversal_policy)
        kwargs = {"resource_class": resource_class} if resource_class is not None else {}
        port, resource = await within(listen_json_biller(reactor, LOOPBACK, ledger=ledger, clock=sim_clock,
                                                         log=log, **kwargs))
        running.append(port)
        return RunningJsonSim(port, resource)

    yield start
    for port in running:
        await within(defer.maybeDeferred(port.stopListening))


@pytest_twisted.async_yield_fixture
async def make_json(log):
    made = []

    def make(url, **settings):
        settings = {"url": url, "service_names": {"HOME": "WATER"}, **settings}
        adapter = build_adapter("json", reactor, settings, log, context=BuildContext(biller_code="WAT"))
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await within(adapter.close())


@pytest_twisted.async_yield_fixture
async def water(start_json, make_json):
    sim = await start_json()
    yield sim, make_json(sim.url)


async def failure_of(d, *expected):
    with pytest.raises(expected) as info:
        await within(d)
    return info.value


# --- inquiry -----------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_inquiry_returns_bills_with_status_dates_and_partial_rules(water):
    _sim, adapter = water
    result = await within(adapter.inquire(query(YOUSEF)))
    assert result.customer_name == "Yousef Amin"
    assert [(b.bill_number, b.amount_due, b.status, b.issue_date, b.due_date, b.allow_partial, b.min_amount)
            for b in result.bills] == [
        ("WB-1000000002-1", 8000, BillStatus.NEW, "20260301", "20260331", True, 1000),
        ("WB-1000000002-2", 9500, BillStatus.NEW, "20260401", "20260430", False, None),
    ]
    assert result.total_due == 17500


@pytest_twisted.ensureDeferred
async def test_paid_and_expired_bills_are_not_offered(water):
    _sim, adapter = water
    assert (await within(adapter.inquire(query(HUDA)))).bills == ()
    assert (await within(adapter.inquire(query(KARIM)))).bills == ()
    arabic = await within(adapter.inquire(query("1000000005")))
    assert arabic.customer_name == "سلمى الخطيب"


@pytest_twisted.ensureDeferred
async def test_unknown_account_and_bill_are_declined(water):
    _sim, adapter = water
    unknown = await failure_of(adapter.inquire(query("1999999999")), BillerDeclined)
    assert unknown.reason is DeclineReason.UNKNOWN_BILLING_NUMBER
    bill = await failure_of(adapter.inquire(query(NADIA, "WB-nope")), BillerDeclined)
    assert bill.reason is DeclineReason.BILL_NOT_FOUND


# --- payment notification ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_payment_is_recorded_once_under_the_gateway_id(water):
    sim, adapter = water
    first = await within(adapter.pay(order("GW-J1", NADIA, 5000)))
    assert (first.payment_id, first.amount, first.bill_number) == ("GW-J1", 5000, "WB-1000000001-1")
    again = await within(adapter.pay(order("GW-J1", NADIA, 5000)))
    assert again == first
    assert [(p.payment_id, p.amount, p.receipt_number) for p in sim.ledger.payments.values()] == [
        ("GW-J1", 5000, first.receipt_number)]
    [bill] = (await within(adapter.inquire(query(NADIA)))).bills
    assert (bill.amount_due, bill.status) == (7500, BillStatus.PARTIALLY_PAID)
    clash = await failure_of(adapter.pay(order("GW-J1", NADIA, 6000)), BillerDeclined)
    assert clash.reason is DeclineReason.OTHER and clash.detail.startswith("DUPLICATE_MISMATCH")
    assert len(sim.ledger.payments) == 1


@pytest.mark.parametrize("number,amount,bill,reason,code", [
    (NADIA, 12501, None, DeclineReason.INVALID_AMOUNT, "INVALID_AMOUNT"),
    (YOUSEF, 500, None, DeclineReason.INVALID_AMOUNT, "INVALID_AMOUNT"),  # below the minimum 1.000
    (YOUSEF, 9000, "WB-1000000002-2", DeclineReason.INVALID_AMOUNT, "PARTIAL_NOT_ALLOWED"),
    (HUDA, 100, "WB-1000000003-1", DeclineReason.BILL_ALREADY_PAID, "BILL_ALREADY_PAID"),
    (HUDA, 100, None, DeclineReason.NO_BILL_DUE, "NO_BILL_DUE"),
    (KARIM, 100, "WB-1000000004-1", DeclineReason.NO_BILL_DUE, "BILL_EXPIRED"),
])
@pytest_twisted.ensureDeferred
async def test_the_billers_rules_refuse_and_record_nothing(water, number, amount, bill, reason, code):
    sim, adapter = water
    error = await failure_of(adapter.pay(order("GW-J2", number, amount, bill)), BillerDeclined)
    assert error.reason is reason and error.detail.startswith(code)
    assert sim.ledger.payments == {}


@pytest_twisted.ensureDeferred
async def test_wrong_currency_is_refused(water):
    sim, adapter = water
    error = await failure_of(adapter.pay(order("GW-J3", NADIA, 100, currency="978")), BillerDeclined)
    assert error.reason is DeclineReason.INVALID_AMOUNT and sim.ledger.payments == {}


# --- status and reversal ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_status_follows_the_payment_through_its_reversal(water):
    sim, adapter = water
    assert (await within(adapter.status("GW-J4"))).status is PaymentStatusKind.NOT_FOUND
    paid = await within(adapter.pay(order("GW-J4", NADIA, 12500)))
    posted = await within(adapter.status("GW-J4"))
    assert (posted.status, posted.receipt_number, posted.amount) == (PaymentStatusKind.POSTED,
                                                                     paid.receipt_number, 12500)
    assert (await within(adapter.reverse("GW-J4"))).reversed is True
    assert (await within(adapter.reverse("GW-J4"))).reversed is True  # idempotent
    assert (await within(adapter.status("GW-J4"))).status is PaymentStatusKind.REVERSED
    [bill] = (await within(adapter.inquire(query(NADIA)))).bills
    assert bill.amount_due == 12500
    again = await failure_of(adapter.pay(order("GW-J4", NADIA, 12500)), BillerDeclined)
    assert again.detail.startswith("PAYMENT_ID_REVERSED")


@pytest_twisted.ensureDeferred
async def test_reversal_before_the_payment_bars_it(water):
    sim, adapter = water
    assert (await within(adapter.reverse("GW-J5"))).reversed is False
    await failure_of(adapter.pay(order("GW-J5", NADIA, 100)), BillerDeclined)
    assert sim.ledger.payments == {}


@pytest_twisted.ensureDeferred
async def test_biller_refusing_reversals_is_a_not_permitted_decline(start_json, make_json):
    sim = await start_json(reversal_policy="never")
    adapter = make_json(sim.url)
    await within(adapter.pay(order("GW-J6", NADIA, 100)))
    error = await failure_of(adapter.reverse("GW-J6"), BillerDeclined)
    assert error.reason is DeclineReason.NOT_PERMITTED
    assert (await within(adapter.status("GW-J6"))).status is PaymentStatusKind.POSTED


# --- misbehaving billers --------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_slow_biller_times_out_in_doubt_and_records_later(start_json, make_json, sim_clock):
    sim = await start_json(functools.partial(SlowJsonBiller, delay=20))
    adapter = make_json(sim.url)
    received = sim.resource.when_received()
    abandoned = sim.resource.when_abandoned()
    d = adapter.pay(order("GW-J7", NADIA, 100))
    d.addTimeout(10, sim_clock)
    await within(received)
    sim_clock.advance(10)
    await failure_of(d, defer.TimeoutError)
    await within(abandoned)  # the connection was really aborted
    assert sim.ledger.payments == {}
    sim_clock.advance(10)  # the biller gets to it anyway: this is why it was IN_DOUBT
    assert list(sim.ledger.payments) == ["GW-J7"]
    # IN_DOUBT is settled by a status query, which finds it.
    sim.resource.delay = 1
    received = sim.resource.when_received()
    status = adapter.status("GW-J7")
    await within(received)
    sim_clock.advance(1)
    assert (await within(status)).status is PaymentStatusKind.POSTED


@pytest_twisted.ensureDeferred
async def test_down_biller_is_outcome_unknown_and_records_nothing(start_json, make_json):
    sim = await start_json(DownJsonBiller)
    error = await failure_of(make_json(sim.url).pay(order("GW-J8", NADIA, 100)), BillerOutcomeUnknown)
    assert "ResponseNeverReceived" in str(error)
    assert sim.ledger.payments == {}


@pytest_twisted.ensureDeferred
async def test_error_answers_are_outcome_unknown(start_json, make_json):
    sim = await start_json(ErrorJsonBiller)
    error = await failure_of(make_json(sim.url).pay(order("GW-J9", NADIA, 100)), BillerOutcomeUnknown)
    assert "HTTP 500 INTERNAL" in str(error)
    assert sim.ledger.payments == {}


@pytest_twisted.ensureDeferred
async def test_record_then_drop_is_unknown_and_status_resolves_it(start_json, make_json):
    dropping = await start_json(RecordThenDropJsonBiller)
    await failure_of(make_json(dropping.url).pay(order("GW-J10", NADIA, 12500)), BillerOutcomeUnknown)
    assert list(dropping.ledger.payments) == ["GW-J10"]
    healthy = await start_json(ledger=dropping.ledger)  # a sound front end on the same ledger
    status = await within(make_json(healthy.url).status("GW-J10"))
    assert (status.status, status.amount) == (PaymentStatusKind.POSTED, 12500)


@pytest_twisted.ensureDeferred
async def test_an_answer_written_twice_counts_once(start_json, make_json):
    sim = await start_json(TwiceJsonBiller)
    adapter = make_json(sim.url, pool_size=1)
    paid = await within(adapter.pay(order("GW-J11", NADIA, 100)))
    assert paid.amount == 100
    # The stray second answer must not be taken for the next call's.
    status = await within(adapter.status("GW-J11"))
    assert (status.status, status.receipt_number) == (PaymentStatusKind.POSTED, paid.receipt_number)
    second = await within(adapter.pay(order("GW-J12", NADIA, 200)))
    assert second.payment_id == "GW-J12" and second.amount == 200
    assert [p.payment_id for p in sim.ledger.payments.values()] == ["GW-J11", "GW-J12"]


@pytest_twisted.ensureDeferred
async def test_garbage_answer_is_unknown_although_recorded(start_json, make_json):
    sim = await start_json(GarbageJsonBiller)
    error = await failure_of(make_json(sim.url).pay(order("GW-J13", NADIA, 100)), BillerOutcomeUnknown)
    assert "unusable answer" in str(error)
    assert list(sim.ledger.payments) == ["GW-J13"]


# --- capabilities and configuration --------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_biller_without_status_queries_is_never_asked(water, make_json):
    sim, _ = water
    plain = make_json(sim.url, supports_status=False, supports_reversal=False)
    assert not plain.capabilities.can_query_status and not plain.capabilities.can_reverse
    guarded = GuardedAdapter(plain, clock=Clock())
    before = sim.resource.requests
    await failure_of(guarded.status("GW-J14"), CapabilityMissing)
    refused = await failure_of(guarded.reverse("GW-J14"), BillerDeclined)
    assert refused.reason is DeclineReason.NOT_PERMITTED
    assert sim.resource.requests == before


@pytest_twisted.ensureDeferred
async def test_configured_headers_and_service_names_reach_the_biller(water, make_json):
    sim, _ = water
    seen = []
    real = sim.resource.render

    def render(request):
        seen.append((request.getHeader(b"authorization"), request.getHeader(b"x-interface-version")))
        return real(request)

    sim.resource.render = render
    adapter = make_json(sim.url, headers={"Authorization": "Bearer t0k3n"})
    await within(adapter.inquire(query(NADIA)))  # service HOME travels as WATER
    assert seen == [(b"Bearer t0k3n", b"1")]


# --- the ledger, read back ---------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_ledger_is_read_through_the_reconciliation_listing_page_by_page(water, make_json):
    sim, _ = water
    adapter = make_json(sim.url, ledger_page_size=2)
    for i, amount in enumerate((100, 200, 300, 400, 500)):
        await within(adapter.pay(order(f"GW-L{i}", NADIA, amount)))
    await within(adapter.reverse("GW-L1"))
    entries = await within(deferToThread(adapter.read_ledger))
    assert [(e.payment_id, e.amount, e.reversed, e.subscriber) for e in entries] == [
        ("GW-L0", 100, False, NADIA), ("GW-L1", 200, True, NADIA), ("GW-L2", 300, False, NADIA),
        ("GW-L3", 400, False, NADIA), ("GW-L4", 500, False, NADIA)]
    assert all(e.receipt_number.startswith("JR") and e.posted_at.endswith("Z") for e in entries)


@pytest_twisted.ensureDeferred
async def test_unreachable_ledger_says_so(start_json):
    sim = await start_json()
    url = sim.url
    await within(sim.port.stopListening())
    with pytest.raises(LedgerUnavailable, match="cannot read"):
        await within(deferToThread(read_json_ledger, url, timeout=5))


# --- what each answer means, per call (pure) -------------------------------------------------

def answer(code, body=b""):
    return HttpAnswer(code, Headers(), body)


ERROR = codec.error_body("REVERSAL_NOT_PERMITTED", "no")
CUSTOM = codec.error_body("E17", "cut-off")


@pytest.mark.parametrize("refusal,code,body,expected", [
    ("declines", 422, CUSTOM, BillerDeclined),
    ("declines", 404, b"<html/>", BillerDeclined),
    ("declines", 503, CUSTOM, BillerOutcomeUnknown),
    ("declines", 429, b"", BillerOutcomeUnknown),
    ("declines", 409, CUSTOM, BillerOutcomeUnknown),
    ("never", 404, b"", BillerOutcomeUnknown),  # a status query is never "declined"
    ("never", 422, CUSTOM, BillerOutcomeUnknown),
    ("policy_only", 422, ERROR, BillerDeclined),
    ("policy_only", 404, b"", BillerOutcomeUnknown),  # a proxy's 404 is not the biller's policy
    ("policy_only", 422, CUSTOM, BillerOutcomeUnknown),
    ("declines", 200, ERROR, BillerOutcomeUnknown),  # an error body on a 200 confirms nothing
])
def test_what_an_answer_means_depends_on_the_call(refusal, code, body, expected):
    decode = functools.partial(codec.decode_payment, payment_id="GW-1")
    with pytest.raises(expected):
        judge(answer(code, body), decode, refusal)


def test_the_billers_own_codes_come_from_configuration():
    with pytest.raises(BillerDeclined) as info:
        judge(answer(422, CUSTOM), lambda b: b, "declines", {"E17": DeclineReason.CUTOFF_PASSED})
    assert info.value.reason is DeclineReason.CUTOFF_PASSED


def test_an_answer_about_another_payment_never_confirms():
    body = codec.dumps({"paymentId": "GW-2", "status": "RECORDED", "receiptNumber": "R", "amount": 1})
    with pytest.raises(BillerOutcomeUnknown, match="paymentId"):
        judge(answer(200, body), functools.partial(codec.decode_payment, payment_id="GW-1"), "declines")
