"""The shared HTTP transport over real loopback HTTP: each way an exchange
can end comes out as what it means for the money -- an answer, "nothing
was sent" (BillerUnavailable) or "the biller may have it"
(BillerOutcomeUnknown) -- and the telecom adapter on top of it turns HTTP
statuses into a decline only when they say "refused, nothing done"."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.web import resource, server
from twisted.web.http_headers import Headers

from billgw.billing_adapters import soap
from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    DeclineReason,
    PaymentOrder,
)
from billgw.billing_adapters.telecom_soap import TELECOM_NS, TelecomSoapAdapter, interpret_response
from billgw.billing_adapters.transports.http import (
    ANSWERED,
    REFUSED,
    UNKNOWN,
    HttpTransport,
    status_meaning,
)
from billing_adapters_helpers import LOOPBACK, within

pytestmark = pytest.mark.timeout(30)


class Answer(resource.Resource):
    """Answers every request with ``code`` and ``body``, and counts them."""

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"hello"):
        super().__init__()
        self.code = code
        self.body = body
        self.requests: list[bytes] = []

    def render(self, request):
        self.requests.append(request.content.read())
        request.setResponseCode(self.code)
        return self.body


class Hang(resource.Resource):
    """Takes the request and never answers; fires ``received`` on each."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.received: list[defer.Deferred] = []
        self.gone: list[defer.Deferred] = []  # one per request: fires when its client went away
        self.arrived = 0

    def when_received(self) -> defer.Deferred:
        d = defer.Deferred()
        self.received.append(d)
        return d

    def render(self, request):
        self.arrived += 1
        gone = defer.Deferred()
        self.gone.append(gone)
        request.notifyFinish().addErrback(lambda _: gone.callback(None))
        waiting, self.received = self.received, []
        for d in waiting:
            reactor.callLater(0, d.callback, None)
        return server.NOT_DONE_YET


class Drop(resource.Resource):
    """Reads the request, then drops the connection without an answer."""

    isLeaf = True

    def render(self, request):
        request.channel.transport.abortConnection()
        return server.NOT_DONE_YET


class Garbage(resource.Resource):
    """Answers bytes that are not HTTP at all, then closes."""

    isLeaf = True

    def render(self, request):
        transport = request.channel.transport
        transport.write(b"\x00\x01 this is not HTTP \r\n\r\n")
        transport.loseConnection()
        return server.NOT_DONE_YET


class Stall(Hang):
    """Headers and part of a body, then nothing."""

    def render(self, request):
        super().render(request)
        request.setHeader(b"content-length", b"100")
        request.write(b"partial")
        return server.NOT_DONE_YET


@pytest_twisted.async_yield_fixture
async def web():
    """A web server on a loopback port 0; ``url(path)`` names a resource."""
    root = resource.Resource()
    ports = []

    class Web:
        def __init__(self):
            self.root = root

        @property
        def connections(self) -> int:
            return site.connections

        def add(self, name: str, child: resource.Resource) -> resource.Resource:
            root.putChild(name.encode(), child)
            return child

        def url(self, name: str) -> bytes:
            return f"http://127.0.0.1:{ports[0].getHost().port}/{name}".encode()

    class CountingSite(server.Site):
        connections = 0

        def buildProtocol(self, addr):
            CountingSite.connections += 1
            return super().buildProtocol(addr)

    site = CountingSite(root)
    site.noisy = False
    ports.append(await within(serverFromString(reactor, LOOPBACK).listen(site)))
    yield Web()
    await within(ports[0].stopListening())


@pytest_twisted.async_yield_fixture
async def make_transport(log):
    made = []

    def make(**kwargs) -> HttpTransport:
        kwargs.setdefault("log", log)
        transport = HttpTransport(reactor, **kwargs)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await within(transport.close())


async def failure_of(d, *expected):
    with pytest.raises(expected) as info:
        await within(d)
    return info.value


# --- what a status means (pure) -------------------------------------------------

@pytest.mark.parametrize("code,meaning", [
    (200, ANSWERED), (201, ANSWERED), (204, ANSWERED),
    (400, REFUSED), (401, REFUSED), (403, REFUSED), (404, REFUSED), (405, REFUSED), (415, REFUSED),
    (422, REFUSED),
    # The biller may hold the request: never a certain decline.
    (408, UNKNOWN), (409, UNKNOWN), (410, UNKNOWN), (412, UNKNOWN), (429, UNKNOWN), (499, UNKNOWN),
    (500, UNKNOWN), (502, UNKNOWN), (503, UNKNOWN), (504, UNKNOWN), (302, UNKNOWN), (100, UNKNOWN),
])
def test_only_refusal_statuses_say_nothing_was_done(code, meaning):
    assert status_meaning(code) == meaning


# --- the transport over loopback --------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_answer_carries_status_headers_and_body(web, make_transport):
    target = web.add("ok", Answer(201, b"done"))
    answer = await within(make_transport().request(b"POST", web.url("ok"), body=b"payload",
                                                   headers=Headers({b"X-Id": [b"1"]})))
    assert (answer.code, answer.body) == (201, b"done")
    assert target.requests == [b"payload"]


@pytest_twisted.ensureDeferred
async def test_error_statuses_are_answers_for_the_adapter_to_judge(web, make_transport):
    for code in (404, 408, 429, 503):
        web.add(f"s{code}", Answer(code, b"no"))
        answer = await within(make_transport().request(b"GET", web.url(f"s{code}")))
        assert answer.code == code


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_unavailable(make_transport):
    port = await within(serverFromString(reactor, LOOPBACK).listen(Factory()))
    number = port.getHost().port
    await within(port.stopListening())
    error = await failure_of(make_transport().request(b"POST", f"http://127.0.0.1:{number}/x".encode(),
                                                      body=b"pay"), BillerUnavailable)
    assert "ConnectionRefused" in str(error)


@pytest_twisted.ensureDeferred
async def test_drop_after_the_request_left_is_unknown(web, make_transport):
    web.add("drop", Drop())
    error = await failure_of(make_transport().request(b"POST", web.url("drop"), body=b"pay"),
                             BillerOutcomeUnknown)
    assert "ResponseNeverReceived" in str(error)


@pytest_twisted.ensureDeferred
async def test_garbage_instead_of_http_is_unknown(web, make_transport):
    web.add("garbage", Garbage())
    await failure_of(make_transport().request(b"POST", web.url("garbage"), body=b"pay"), BillerOutcomeUnknown)


@pytest_twisted.ensureDeferred
async def test_answer_larger_than_allowed_is_unknown(web, make_transport):
    web.add("big", Answer(200, b"x" * 5000))
    error = await failure_of(make_transport(max_body=1000).request(b"GET", web.url("big")), BillerOutcomeUnknown)
    assert "larger than 1000" in str(error)


@pytest_twisted.ensureDeferred
async def test_raw_server_closing_mid_body_is_unknown(make_transport):
    class HalfAnswer(Protocol):
        def dataReceived(self, data):
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly part")
            self.transport.loseConnection()

    port = await within(serverFromString(reactor, LOOPBACK).listen(Factory.forProtocol(HalfAnswer)))
    try:
        error = await failure_of(make_transport().request(
            b"POST", f"http://127.0.0.1:{port.getHost().port}/x".encode(), body=b"pay"), BillerOutcomeUnknown)
        assert "cut short" in str(error)
    finally:
        await within(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_budget_spent_waiting_for_the_answer_is_unknown_and_aborts(web, make_transport):
    hang = web.add("hang", Hang())
    clock = Clock()
    received = hang.when_received()
    d = make_transport(clock=clock, timeout=4).request(b"POST", web.url("hang"), body=b"pay")
    await within(received)
    clock.advance(3.9)
    assert not d.called
    clock.advance(0.1)
    error = await failure_of(d, BillerOutcomeUnknown)
    assert "no answer within 4 s" in str(error)
    await within(hang.gone[0])


@pytest_twisted.ensureDeferred
async def test_budget_spent_waiting_for_a_slot_is_unavailable_and_never_sent(web, make_transport):
    hang = web.add("hang", Hang())
    clock = Clock()
    transport = make_transport(clock=clock, pool_size=1, timeout=5)
    received = hang.when_received()
    first = transport.request(b"POST", web.url("hang"), body=b"first")
    await within(received)
    second = transport.request(b"POST", web.url("hang"), body=b"second", timeout=2)
    assert (transport.in_flight, transport.waiting) == (1, 1)
    clock.advance(2)
    error = await failure_of(second, BillerUnavailable)
    assert "no connection within 2 s" in str(error)
    assert transport.waiting == 0
    clock.advance(3)
    await failure_of(first, BillerOutcomeUnknown)
    assert hang.arrived == 1  # the second request never reached the biller
    assert transport.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_caller_cancel_aborts_the_connection_and_frees_the_slot(web, make_transport):
    hang = web.add("hang", Hang())
    web.add("ok", Answer())
    transport = make_transport(pool_size=1)
    received = hang.when_received()
    d = transport.request(b"POST", web.url("hang"), body=b"pay")
    await within(received)
    d.cancel()
    await failure_of(d, CancelledError)
    await within(hang.gone[0])
    assert (await within(transport.request(b"GET", web.url("ok")))).code == 200


@pytest_twisted.ensureDeferred
async def test_stalled_body_under_budget_is_unknown(web, make_transport):
    stall = web.add("stall", Stall())
    clock = Clock()
    transport = make_transport(clock=clock, timeout=3)
    received = stall.when_received()
    d = transport.request(b"GET", web.url("stall"))
    await within(received)
    clock.advance(3)
    error = await failure_of(d, BillerOutcomeUnknown)
    assert "no answer within 3 s" in str(error)
    await within(stall.gone[0])


@pytest_twisted.ensureDeferred
async def test_persistent_connections_are_reused(web, make_transport):
    web.add("ok", Answer())
    transport = make_transport(pool_size=2)
    for _ in range(3):
        assert (await within(transport.request(b"GET", web.url("ok")))).code == 200
        await within(_next_turn())  # the connection goes back to the pool after the body
    assert web.connections == 1


# --- the telecom adapter judging HTTP statuses over loopback ----------------------

ORDER = PaymentOrder(payment_id="GW-H1", biller_code="TEL", service_code="MOBILE", billing_number="0791234567",
                     bill_number=None, amount=100, currency="400", paid_at="2026-12-02T08:00:00Z")

FAULT = soap.build_fault_envelope(soap.SoapFault("Client", "no", "INVALID_AMOUNT"), TELECOM_NS)


@pytest.mark.parametrize("code,body,expected", [
    (404, b"<html>no such path</html>", BillerDeclined),
    (405, b"", BillerDeclined),
    (408, b"<html>request timeout</html>", BillerOutcomeUnknown),
    (429, b"slow down", BillerOutcomeUnknown),
    (409, b"conflict", BillerOutcomeUnknown),
    (502, b"bad gateway", BillerOutcomeUnknown),
    (503, FAULT, BillerOutcomeUnknown),  # a fault behind a proxy's 503 proves nothing
    (429, FAULT, BillerOutcomeUnknown),
    (500, FAULT, BillerDeclined),  # the spec's fault: refused, nothing recorded
])
@pytest_twisted.ensureDeferred
async def test_telecom_adapter_declines_only_on_a_refusal(web, log, code, body, expected):
    target = web.add("svc", Answer(code, body))
    adapter = TelecomSoapAdapter(reactor, web.url("svc").decode(), timeout_connect=5, pool_size=1, log=log)
    try:
        error = await failure_of(adapter.pay(ORDER), expected)
    finally:
        await within(adapter.close())
    assert len(target.requests) == 1
    if expected is BillerDeclined:
        assert error.reason in (DeclineReason.OTHER, DeclineReason.INVALID_AMOUNT)


def test_telecom_codec_keeps_faults_on_200_and_refusals():
    assert status_meaning(200) == ANSWERED
    with pytest.raises(BillerDeclined):
        interpret_response(400, FAULT, lambda e: e)
    with pytest.raises(BillerOutcomeUnknown):
        interpret_response(504, FAULT, lambda e: e)


# --- helpers ------------------------------------------------------------------

def _next_turn() -> defer.Deferred:
    d = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    return d
