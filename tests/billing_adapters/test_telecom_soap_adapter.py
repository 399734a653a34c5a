"""The telecom SOAP adapter against the real simulator over loopback HTTP.

Each test checks what matters for the money: the amounts and states the
adapter reports, and the rows the biller's ledger actually holds.
"""
from __future__ import annotations

import functools

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock

from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillQuery,
    DeclineReason,
    PaymentOrder,
    PaymentStatusKind,
)
from billgw.billing_adapters.telecom_sim import (
    TelecomResource,
    FailingTelecomResource,
    GarbageTelecomResource,
    PostThenDropResource,
    SlowTelecomResource,
    read_ledger,
)
from billing_adapters_helpers import LOOPBACK, within
from twisted.internet import reactor

pytestmark = pytest.mark.timeout(30)

LAYLA = "0791234567"
OMAR = "0797654321"
NOTHING_DUE = "0781111111"


def query(number: str, bill_number: str | None = None) -> BillQuery:
    return BillQuery(biller_code="TELECOM", service_code="POSTPAID", billing_number=number, bill_number=bill_number)


def order(payment_id: str, number: str, amount: int, bill_number: str | None = None, currency: str = "400"):
    return PaymentOrder(
        payment_id=payment_id, biller_code="TELECOM", service_code="POSTPAID", billing_number=number,
        bill_number=bill_number, amount=amount, currency=currency, paid_at="2024-06-01T10:15:00Z",
    )


async def failure_of(d, *expected):
    """Await ``d`` (bounded) and return the exception, which must be one of ``expected``."""
    with pytest.raises(expected) as info:
        await within(d)
    return info.value


# --- inquiry -------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_inquiry_returns_name_bills_and_total(adapter):
    result = await within(adapter.inquire(query(LAYLA)))
    assert result.customer_name == "Layla Haddad"
    assert result.billing_number == LAYLA
    assert [(b.bill_number, b.amount_due, b.currency, b.due_date) for b in result.bills] == [
        ("TB-2024-000101", 12500, "400", "20240630")
    ]
    assert result.total_due == 12500


@pytest_twisted.ensureDeferred
async def test_inquiry_lists_several_bills_oldest_first(adapter):
    result = await within(adapter.inquire(query(OMAR)))
    assert [(b.bill_number, b.amount_due) for b in result.bills] == [
        ("TB-2024-000201", 8250), ("TB-2024-000202", 9750)
    ]
    assert result.total_due == 18000


@pytest_twisted.ensureDeferred
async def test_inquiry_with_nothing_due_is_an_empty_list_not_a_fault(adapter):
    result = await within(adapter.inquire(query(NOTHING_DUE)))
    assert result.customer_name == "Sami Nasser"
    assert result.bills == ()
    assert result.total_due == 0


@pytest_twisted.ensureDeferred
async def test_inquiry_keeps_arabic_names_intact(adapter):
    result = await within(adapter.inquire(query("0796666666")))
    assert result.customer_name == "هالة منصور"


@pytest_twisted.ensureDeferred
async def test_inquiry_for_unknown_subscriber_is_declined(adapter):
    error = await failure_of(adapter.inquire(query("0790000000")), BillerDeclined)
    assert error.reason is DeclineReason.UNKNOWN_BILLING_NUMBER


@pytest_twisted.ensureDeferred
async def test_inquiry_for_one_named_bill(adapter):
    result = await within(adapter.inquire(query(OMAR, "TB-2024-000202")))
    assert [b.bill_number for b in result.bills] == ["TB-2024-000202"]
    error = await failure_of(adapter.inquire(query(OMAR, "TB-2024-999999")), BillerDeclined)
    assert error.reason is DeclineReason.BILL_NOT_FOUND


# --- payment -------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_payment_is_recorded_once_with_its_receipt(adapter, sim):
    confirmation = await within(adapter.pay(order("GW-1", LAYLA, 12500)))
    assert confirmation.payment_id == "GW-1"
    assert confirmation.amount == 12500
    assert confirmation.bill_number == "TB-2024-000101"
    assert confirmation.receipt_number.startswith("TR")

    postings = await within(sim.simulator.postings())
    assert [(p.payment_id, p.subscriber, p.bill_number, p.amount, p.receipt_number, p.reversed)
            for p in postings] == [("GW-1", LAYLA, "TB-2024-000101", 12500, confirmation.receipt_number, False)]
    assert (await within(sim.simulator.bill(LAYLA))).outstanding == 0
    # The audit CLI reads the same rows from another connection, through the adapter.
    assert read_ledger(sim.simulator.db_path) == postings
    assert adapter.read_ledger(sim.simulator.db_path) == postings


@pytest_twisted.ensureDeferred
async def test_same_payment_id_twice_posts_once_and_returns_same_receipt(adapter, sim):
    first = await within(adapter.pay(order("GW-2", LAYLA, 12500)))
    # The bill is now settled: a repeat must still get its receipt back,
    # not BILL_ALREADY_PAID, and must not record anything.
    second = await within(adapter.pay(order("GW-2", LAYLA, 12500)))
    assert second == first
    postings = await within(sim.simulator.postings())
    assert len(postings) == 1
    assert (await within(sim.simulator.bill(LAYLA))).outstanding == 0


@pytest_twisted.ensureDeferred
async def test_repeat_with_other_amount_is_refused_and_changes_nothing(adapter, sim):
    await within(adapter.pay(order("GW-3", OMAR, 1000)))
    error = await failure_of(adapter.pay(order("GW-3", OMAR, 2000)), BillerDeclined)
    assert error.reason is DeclineReason.OTHER
    assert error.detail.startswith("DUPLICATE_MISMATCH")
    postings = await within(sim.simulator.postings())
    assert [(p.payment_id, p.amount) for p in postings] == [("GW-3", 1000)]


@pytest_twisted.ensureDeferred
async def test_partial_payment_credits_oldest_bill_and_leaves_the_rest_due(adapter, sim):
    confirmation = await within(adapter.pay(order("GW-4", OMAR, 5000)))
    assert confirmation.bill_number == "TB-2024-000201"
    result = await within(adapter.inquire(query(OMAR)))
    assert [(b.bill_number, b.amount_due) for b in result.bills] == [
        ("TB-2024-000201", 3250), ("TB-2024-000202", 9750)
    ]
    assert result.total_due == 13000


@pytest_twisted.ensureDeferred
async def test_payment_of_a_named_bill(adapter, sim):
    confirmation = await within(adapter.pay(order("GW-5", OMAR, 9750, bill_number="TB-2024-000202")))
    assert confirmation.bill_number == "TB-2024-000202"
    assert (await within(sim.simulator.bill(OMAR, "TB-2024-000202"))).outstanding == 0
    assert (await within(sim.simulator.bill(OMAR, "TB-2024-000201"))).outstanding == 8250


@pytest.mark.parametrize("amount", [12501, 0, -5])
@pytest_twisted.ensureDeferred
async def test_amount_outside_the_outstanding_is_invalid(adapter, sim, amount):
    error = await failure_of(adapter.pay(order("GW-6", LAYLA, amount)), BillerDeclined)
    assert error.reason is DeclineReason.INVALID_AMOUNT
    assert await within(sim.simulator.postings()) == []
    assert (await within(sim.simulator.bill(LAYLA))).outstanding == 12500


@pytest_twisted.ensureDeferred
async def test_wrong_currency_is_invalid_amount(adapter, sim):
    error = await failure_of(adapter.pay(order("GW-7", LAYLA, 100, currency="978")), BillerDeclined)
    assert error.reason is DeclineReason.INVALID_AMOUNT
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_payment_for_unknown_subscriber_is_declined(adapter, sim):
    error = await failure_of(adapter.pay(order("GW-8", "0790000000", 100)), BillerDeclined)
    assert error.reason is DeclineReason.UNKNOWN_BILLING_NUMBER
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_settled_bill_and_nothing_due_are_declined(adapter, sim):
    named = await failure_of(adapter.pay(order("GW-9", NOTHING_DUE, 100, "TB-2024-000301")), BillerDeclined)
    assert named.reason is DeclineReason.BILL_ALREADY_PAID
    unnamed = await failure_of(adapter.pay(order("GW-10", NOTHING_DUE, 100)), BillerDeclined)
    assert unnamed.reason is DeclineReason.NO_BILL_DUE
    await within(adapter.pay(order("GW-11", LAYLA, 12500)))
    again = await failure_of(adapter.pay(order("GW-12", LAYLA, 1, "TB-2024-000101")), BillerDeclined)
    assert again.reason is DeclineReason.BILL_ALREADY_PAID
    assert [p.payment_id for p in await within(sim.simulator.postings())] == ["GW-11"]


# --- status and reversal ----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_status_follows_the_payment_through_reversal(adapter, sim):
    before = await within(adapter.status("GW-20"))
    assert before.status is PaymentStatusKind.NOT_FOUND
    assert before.receipt_number is None

    confirmation = await within(adapter.pay(order("GW-20", LAYLA, 4500)))
    posted = await within(adapter.status("GW-20"))
    assert (posted.status, posted.receipt_number, posted.amount) == (
        PaymentStatusKind.POSTED, confirmation.receipt_number, 4500)

    reversal = await within(adapter.reverse("GW-20"))
    assert reversal.reversed is True
    reversed_status = await within(adapter.status("GW-20"))
    assert (reversed_status.status, reversed_status.amount) == (PaymentStatusKind.REVERSED, 4500)


@pytest_twisted.ensureDeferred
async def test_reversal_restores_the_bill_and_is_idempotent(adapter, sim):
    await within(adapter.pay(order("GW-21", LAYLA, 12500)))
    assert (await within(adapter.reverse("GW-21"))).reversed is True
    assert (await within(adapter.reverse("GW-21"))).reversed is True
    assert (await within(sim.simulator.bill(LAYLA))).outstanding == 12500
    [posting] = await within(sim.simulator.postings())
    assert (posting.payment_id, posting.reversed) == ("GW-21", True)
    # A reversed payment id can never be posted again.
    error = await failure_of(adapter.pay(order("GW-21", LAYLA, 12500)), BillerDeclined)
    assert error.detail.startswith("DUPLICATE_MISMATCH")


@pytest_twisted.ensureDeferred
async def test_reversal_of_unknown_payment_blocks_its_late_posting(adapter, sim):
    reversal = await within(adapter.reverse("GW-22"))
    assert reversal.reversed is False
    error = await failure_of(adapter.pay(order("GW-22", LAYLA, 100)), BillerDeclined)
    assert error.detail.startswith("DUPLICATE_MISMATCH")
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_reversal_refused_by_policy_leaves_payment_posted(start_sim, make_adapter):
    sim = await start_sim(reversal_policy="never")
    adapter = make_adapter(sim.url)
    await within(adapter.pay(order("GW-23", LAYLA, 12500)))
    error = await failure_of(adapter.reverse("GW-23"), BillerDeclined)
    assert error.reason is DeclineReason.NOT_PERMITTED
    assert (await within(adapter.status("GW-23"))).status is PaymentStatusKind.POSTED
    assert [p.reversed for p in await within(sim.simulator.postings())] == [False]
    assert (await within(sim.simulator.bill(LAYLA))).outstanding == 0


# --- transport failures ----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_connection_refused_is_unavailable(make_adapter):
    # Take a free port, then close it: nothing listens there any more.
    port = await within(serverFromString(reactor, LOOPBACK).listen(Factory()))
    number = port.getHost().port
    await within(port.stopListening())
    adapter = make_adapter(f"http://127.0.0.1:{number}/BillingService")
    error = await failure_of(adapter.pay(order("GW-30", LAYLA, 100)), BillerUnavailable)
    assert "ConnectionRefused" in str(error)


@pytest_twisted.ensureDeferred
async def test_post_then_drop_is_unknown_and_status_resolves_it(start_sim, make_adapter):
    dropping = await start_sim(resource_class=PostThenDropResource)
    error = await failure_of(make_adapter(dropping.url).pay(order("GW-31", LAYLA, 12500)), BillerOutcomeUnknown)
    assert "ResponseNeverReceived" in str(error)
    # The biller did record it: this is why the gateway must not decline it.
    [posting] = await within(dropping.simulator.postings())
    assert (posting.payment_id, posting.amount, posting.reversed) == ("GW-31", 12500, False)
    # IN_DOUBT is resolved by a status query to a healthy front end on the same ledger.
    healthy = await start_sim()
    status = await within(make_adapter(healthy.url).status("GW-31"))
    assert (status.status, status.receipt_number, status.amount) == (
        PaymentStatusKind.POSTED, posting.receipt_number, 12500)


@pytest_twisted.ensureDeferred
async def test_http_500_without_fault_is_unknown(start_sim, make_adapter):
    failing = await start_sim(resource_class=FailingTelecomResource)
    error = await failure_of(make_adapter(failing.url).pay(order("GW-32", LAYLA, 100)), BillerOutcomeUnknown)
    assert "HTTP 500" in str(error)
    assert await within(failing.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_garbage_answer_is_unknown_although_posted(start_sim, make_adapter):
    garbage = await start_sim(resource_class=GarbageTelecomResource)
    await failure_of(make_adapter(garbage.url).pay(order("GW-33", LAYLA, 100)), BillerOutcomeUnknown)
    assert [p.payment_id for p in await within(garbage.simulator.postings())] == ["GW-33"]


@pytest_twisted.ensureDeferred
async def test_timeout_cancels_the_request_and_aborts_the_connection(start_sim, make_adapter):
    clock = Clock()
    silent = await start_sim(resource_class=functools.partial(SlowTelecomResource, clock=clock, delay=None))
    abandoned = silent.resource.when_abandoned()
    received = silent.resource.when_received()
    d = make_adapter(silent.url).pay(order("GW-34", LAYLA, 100))
    d.addTimeout(5, clock)
    # Let the request reach the simulator before the gateway gives up.
    await within(received)
    clock.advance(5)
    await failure_of(d, defer.TimeoutError, CancelledError)
    # The simulator saw the client go away: the connection was really aborted.
    await within(abandoned)
    assert silent.resource.abandoned == 1
    assert await within(silent.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_slow_biller_answers_after_its_delay(start_sim, make_adapter):
    clock = Clock()
    slow = await start_sim(resource_class=functools.partial(SlowTelecomResource, clock=clock, delay=3))
    received = slow.resource.when_received()
    d = make_adapter(slow.url).pay(order("GW-35", LAYLA, 100))
    await within(received)
    assert not d.called
    clock.advance(3)
    confirmation = await within(d)
    assert confirmation.amount == 100


@pytest_twisted.ensureDeferred
async def test_wrong_soap_action_is_refused_by_the_biller(sim, make_adapter):
    adapter = make_adapter(sim.url, soap_action_prefix="urn:wrong/")
    error = await failure_of(adapter.pay(order("GW-36", LAYLA, 100)), BillerDeclined)
    assert error.detail.startswith("INVALID_REQUEST")
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_ledger_survives_a_restart_without_reseeding(start_sim, make_adapter):
    first = await start_sim(db_name="var/ledger/telecom.sqlite")  # directories created on start
    await within(make_adapter(first.url).pay(order("GW-37", LAYLA, 2500)))
    await within(first.port.stopListening())
    second = await start_sim(db_name="var/ledger/telecom.sqlite")
    assert [p.payment_id for p in await within(second.simulator.postings())] == ["GW-37"]
    assert (await within(second.simulator.bill(LAYLA))).outstanding == 10000



class _StallMidBody(TelecomResource):
    """Sends the headers and part of the body, then stalls: the gateway's
    timeout must still drop the connection (it is past Agent.request)."""

    def deliver(self, request, code, body):
        request.setResponseCode(200)
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body[:20])


@pytest_twisted.ensureDeferred
async def test_timeout_while_reading_the_answer_aborts_the_connection(start_sim, make_adapter):
    stalling = await start_sim(resource_class=_StallMidBody)
    abandoned = stalling.resource.when_abandoned()
    adapter = make_adapter(stalling.url)
    reading = _when_headers_received(adapter)
    clock = Clock()
    d = adapter.status("GW-38")
    d.addTimeout(5, clock)
    await within(reading)
    clock.advance(5)
    await failure_of(d, defer.TimeoutError)
    await within(abandoned)


def _when_headers_received(adapter):
    """Fires once the adapter has the response headers and is reading the
    body (one reactor turn after Agent.request fired)."""
    reading = defer.Deferred()
    real_request = adapter.transport._agent.request

    def request(*args, **kwargs):
        def got(response):
            reactor.callLater(0, reading.callback, None)
            return response

        return real_request(*args, **kwargs).addCallback(got)

    adapter.transport._agent.request = request
    return reading
