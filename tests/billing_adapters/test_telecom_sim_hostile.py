"""The simulator's HTTP front end refuses hostile or malformed requests
without touching the ledger (raw HTTP, not through our adapter)."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from billgw.billing_adapters import soap
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, TELECOM_NS
from billgw.billing_adapters.transports.http import read_body
from billing_adapters_helpers import BOMB, envelope, within

pytestmark = pytest.mark.timeout(30)


async def post(url: str, body: bytes, action: str) -> tuple[int, bytes]:
    from twisted.web.client import FileBodyProducer
    from io import BytesIO

    agent = Agent(reactor)
    response = await within(agent.request(
        b"POST", url.encode(), Headers({b"Content-Type": [soap.CONTENT_TYPE], b"SOAPAction": [action.encode()]}),
        FileBodyProducer(BytesIO(body)),
    ))
    return response.code, await within(read_body(response, 1 << 20))


def fault_code(data: bytes) -> str:
    return soap.parse_fault(soap.parse_envelope(data), TELECOM_NS).code


@pytest_twisted.ensureDeferred
async def test_entity_expansion_bomb_is_refused_and_records_nothing(sim):
    code, data = await post(sim.url, BOMB, f'"{DEFAULT_SOAP_ACTION_PREFIX}GetBills"')
    assert code == 500
    assert fault_code(data) == "INVALID_REQUEST"
    assert b"lollol" not in data
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_malformed_post_payment_is_refused(sim):
    body = envelope("<tb:PostPayment><tb:PaymentId>GW-1</tb:PaymentId></tb:PostPayment>")
    code, data = await post(sim.url, body, f'"{DEFAULT_SOAP_ACTION_PREFIX}PostPayment"')
    assert (code, fault_code(data)) == (500, "INVALID_REQUEST")
    assert await within(sim.simulator.postings()) == []


@pytest_twisted.ensureDeferred
async def test_non_numeric_amount_is_invalid_amount(sim):
    body = envelope(
        "<tb:PostPayment><tb:PaymentId>GW-1</tb:PaymentId><tb:SubscriberNumber>0791234567</tb:SubscriberNumber>"
        "<tb:Amount>12.5</tb:Amount><tb:Currency>400</tb:Currency><tb:PaidAt>2024-06-01T10:15:00Z</tb:PaidAt>"
        "<tb:Channel>ATM</tb:Channel></tb:PostPayment>"
    )
    code, data = await post(sim.url, body, f'"{DEFAULT_SOAP_ACTION_PREFIX}PostPayment"')
    assert (code, fault_code(data)) == (500, "INVALID_AMOUNT")
    assert await within(sim.simulator.postings()) == []
