"""A 0200 and its 0420 in flight at the same moment, over real sockets.

A switch that pipelines the reversal right behind its 0200, or sends it on
another link while the gateway is still processing the original, must never
get a 0430 for a reversal the gateway recorded NOT_FOUND while the original
goes on to be posted.  An independent switch saw exactly that 20 times of
20 on PostgreSQL.  Here the gateway (real listener, real journal -- SQLite,
and PostgreSQL when BILLGW_TEST_PG_URL is set -- real telecom simulator
with its own ledger) gets PAIRS such pairs back to back, on one connection
and on two; afterwards every reversal must name its original, and the
biller must hold none of the payments.
"""
from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import Int16StringReceiver

from billgw.billing_adapters.telecom_sim import extra_subscriber_number, listen_telecom_sim
from billgw.gateway.config import load_settings
from billgw.gateway.db import make_engine
from billgw.gateway.migrate import upgrade
from billgw.gateway.schema import reversals, transactions
from billgw.gateway.service import GatewayService
from billgw.iso8583.bill_data import BillRequestData
from billgw.iso8583.messages import decode_response, encode_fields

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LOOPBACK = "tcp:0:interface=127.0.0.1"
PAIRS = 12
BOUND = 30.0  # seconds, on any wait; only reached when something is broken
SETTLED = {"REVERSED", "DECLINED"}


class Switch(Int16StringReceiver):
    """A switch's link (binary2 framing): send frames, collect answers."""

    def __init__(self):
        self.answers: list[tuple[str, dict]] = []
        self._waiting: list[tuple[int, defer.Deferred]] = []

    def stringReceived(self, frame: bytes):
        response = decode_response(frame)
        self.answers.append((response.mti, response.fields))
        for n, d in list(self._waiting):
            if len(self.answers) >= n:
                self._waiting.remove((n, d))
                d.callback(self.answers)

    def send(self, *payloads: bytes) -> None:
        """All frames in one write: the gateway reads them in one go."""
        self.transport.write(b"".join(len(p).to_bytes(2, "big") + p for p in payloads))

    def answered(self, n: int, reactor) -> defer.Deferred:
        d = defer.Deferred()
        if len(self.answers) >= n:
            d.callback(self.answers)
        else:
            self._waiting.append((n, d))
        return d.addTimeout(BOUND, reactor)


def keys(i: int) -> dict[str, str]:
    return {"7": "1202040000", "11": f"{100 + i:06d}", "32": "123456", "41": "ATM00001"}


def payment(i: int) -> bytes:
    bill = BillRequestData("TEL", "MOBILE", extra_subscriber_number(i), language="en")
    return encode_fields("0200", {
        **keys(i), "2": "4761739001010010", "3": "500000", "4": "000000012500", "12": "040000", "13": "1202",
        "37": f"633604{i:06d}", "48": bill.to_tlv(), "49": "400"})


def reversal(i: int) -> bytes:
    k = keys(i)
    return encode_fields("0420", {
        "3": "500000", "4": "000000012500", "7": "1202040005", "11": f"{500 + i:06d}", "12": "040005",
        "13": "1202", "32": "123456", "37": f"633604{i:06d}", "39": "68", "41": "ATM00001", "49": "400",
        "90": "0200" + k["11"] + k["7"] + f"{k['32']:0>11}" + "0" * 11})


SIGN_ON = encode_fields("0800", {"7": "1202035959", "11": "000001", "70": "001"})


class World:
    def __init__(self, reactor, tmp_path, db_url):
        self.reactor, self.tmp_path, self.db_url = reactor, tmp_path, db_url
        self.tel_port = self.telecom = self.gateway = self.engine = None
        self.links: list[Switch] = []

    async def start(self):
        r = self.reactor
        self.tel_port, self.telecom = await listen_telecom_sim(
            r, LOOPBACK, db_path=str(self.tmp_path / "ledger.sqlite"), extra_subscribers=PAIRS)
        self.engine = make_engine(self.db_url, 2)
        await deferToThread(upgrade, self.engine)
        base = load_settings(environ={})
        tel = base.billers["TEL"]
        settings = dataclasses.replace(
            base,
            listener=dataclasses.replace(base.listener, endpoint=LOOPBACK),
            database=dataclasses.replace(base.database, url=self.db_url, auto_upgrade=False),
            sms=dataclasses.replace(base.sms, enabled=False),
            recovery=dataclasses.replace(base.recovery, poll_interval=0.2),
            billers={"TEL": dataclasses.replace(tel, adapter_settings={
                **tel.adapter_settings,
                "url": f"http://127.0.0.1:{self.tel_port.getHost().port}/BillingService"})})
        self.gateway = GatewayService(settings, r)
        listening = await self.gateway.start().addTimeout(BOUND, r)
        self.port = listening.getHost().port

    async def link(self) -> Switch:
        """A new connection, signed on."""
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port, timeout=5)
        switch = await connectProtocol(endpoint, Switch()).addTimeout(BOUND, self.reactor)
        self.links.append(switch)
        switch.send(SIGN_ON)
        [(mti, fields)] = await switch.answered(1, self.reactor)
        assert (mti, fields["39"]) == ("0810", "00")
        switch.answers.clear()
        return switch

    async def stop(self):
        for link in self.links:
            link.transport.loseConnection()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.tel_port is not None:
            await defer.maybeDeferred(self.tel_port.stopListening)
            await defer.maybeDeferred(self.telecom.close)
        if self.engine is not None:
            self.engine.dispose()

    def journal(self):
        with self.engine.connect() as conn:
            return (conn.execute(select(transactions)).all(), conn.execute(select(reversals)).all())

    async def settled(self):
        """The journal once every payment is settled (bounded)."""
        for _ in range(int(BOUND / 0.2)):
            txns, revs = await deferToThread(self.journal)
            if len(txns) == PAIRS and all(t.state in SETTLED for t in txns):
                return txns, revs
            await task.deferLater(self.reactor, 0.2, lambda: None)
        return txns, revs


@pytest.fixture
def world(tmp_path, db_url):
    from twisted.internet import reactor  # the tests' composition root

    w = World(reactor, tmp_path, db_url)
    yield w
    pytest_twisted.blockon(defer.ensureDeferred(w.stop()))


async def check_every_reversal_found_its_original(world):
    txns, revs = await world.settled()
    by_id = {t.id: t for t in txns}
    assert len(revs) == PAIRS
    missed = [r.orig_stan for r in revs if r.transaction_id is None]
    assert not missed, f"reversals recorded NOT_FOUND although their original was journaled: {missed}"
    assert {by_id[r.transaction_id].stan for r in revs} == {keys(i)["11"] for i in range(PAIRS)}
    assert all(t.reversal_requested for t in txns)
    assert sorted(t.state for t in txns if t.state not in SETTLED) == []
    postings = await world.telecom.postings()
    assert [p.payment_id for p in postings if not p.reversed] == [], "the biller holds reversed payments"


@pytest_twisted.ensureDeferred
async def test_reversals_pipelined_behind_their_originals_on_one_link(world):
    await world.start()
    link = await world.link()
    link.send(*[frame for i in range(PAIRS) for frame in (payment(i), reversal(i))])
    answers = await link.answered(2 * PAIRS, world.reactor)
    acks = [f for mti, f in answers if mti == "0430"]
    assert len(acks) == PAIRS and {f["39"] for f in acks} == {"00"}
    assert {f["39"] for mti, f in answers if mti == "0210"} <= {"00", "12", "91"}
    await check_every_reversal_found_its_original(world)


@pytest_twisted.ensureDeferred
async def test_reversals_on_another_link_while_the_originals_are_in_flight(world):
    """One pair at a time, each message on its own link in the same
    instant -- as when the switch timed out on a paused gateway and sent
    the reversal on its other link: the gateway reads both at once."""
    await world.start()
    originals, reversals_link = await world.link(), await world.link()
    for i in range(PAIRS):
        originals.send(payment(i))
        reversals_link.send(reversal(i))
        await originals.answered(i + 1, world.reactor)
        await reversals_link.answered(i + 1, world.reactor)
    assert {(mti, f["39"]) for mti, f in reversals_link.answers} == {("0430", "00")}
    await check_every_reversal_found_its_original(world)
