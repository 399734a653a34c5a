"""The water biller over real sockets and a real database: a switch pays a
water bill through the ISO 8583 wire, the gateway inserts it into the
biller's intake table (SQLite; PostgreSQL in a schema of its own when
BILLGW_TEST_PG_URL is set) and approves it -- and the SMSC receives the
receipt only after the biller's batch has booked the payment.  A payment
the batch rejects becomes an EXCEPTION and no SMS is ever sent.

Every wait is bounded; every port is 0 on 127.0.0.1.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer, task
from twisted.internet.threads import deferToThread

from billgw.atm_sim.client import PAYMENT_PROCESSING_CODE, Client
from billgw.billing_adapters.water.sim import RejectingWaterBiller, WaterBillerSim
from billgw.gateway.db import make_engine
from billgw.gateway.demo import settings_with_water
from billgw.gateway.migrate import upgrade
from billgw.gateway.schema import biller_outbox, transactions
from billgw.gateway.service import GatewayService
from billgw.iso8583.bill_data import BillRequestData, decode_tlv
from billgw.sms.outbox import sms_outbox
from billgw.sms.smpp_link import LinkState
from billgw.sms.smsc_sim import listen_smsc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "billing_adapters"))
from water_helpers import WATER_DB_KINDS, drop_schema, water_db  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LOOPBACK = "tcp:0:interface=127.0.0.1"
TIMEOUT = 20.0
MSISDN = "962795550001"


def bounded(d, reactor, timeout=TIMEOUT):
    return d.addTimeout(timeout, reactor)


class WaterStack:
    def __init__(self, reactor, tmp_path, db_url, water_kind):
        self.reactor = reactor
        self.tmp_path = tmp_path
        self.db_url = db_url
        self.water_url, self.water_schema = water_db(water_kind, tmp_path)
        self.sim = None
        self.gateway = None
        self.smsc_port = self.smsc = None
        self.engine = None

    async def start(self, sim_class=WaterBillerSim):
        r = self.reactor
        self.sim = sim_class(self.water_url, schema=self.water_schema)
        await bounded(deferToThread(self.sim.create), r)
        self.smsc_port, self.smsc = await bounded(listen_smsc(r, LOOPBACK, system_id="billgw", password="pw"), r)
        self.engine = make_engine(self.db_url, 2)
        await bounded(deferToThread(upgrade, self.engine), r)
        base = settings_with_water(None, self.water_url, environ={})
        wtr = base.billers["WTR"]
        water_settings = dict(wtr.adapter_settings)
        if self.water_schema:
            water_settings["schema"] = self.water_schema
        settings = dataclasses.replace(
            base,
            listener=dataclasses.replace(base.listener, endpoint=LOOPBACK),
            database=dataclasses.replace(base.database, url=self.db_url, auto_upgrade=False),
            sms=dataclasses.replace(base.sms, host="127.0.0.1", port=self.smsc_port.getHost().port,
                                    system_id="billgw", password="pw", poll_interval=0.2),
            # Polls every few tenths of a second: the test waits for the
            # batch, not for production's minutes.
            recovery=dataclasses.replace(base.recovery, poll_interval=0.1, retry_base=0.05, retry_cap=0.2,
                                         accepted_poll_delay=0.05),
            billers={"WTR": dataclasses.replace(wtr, adapter_settings=water_settings)},
        )
        self.gateway = GatewayService(settings, r)
        self.port = (await bounded(self.gateway.start(), r)).getHost().port
        await bounded(self.gateway.link.wait_for_state(LinkState.BOUND), r)
        return self

    async def stop(self):
        if self.gateway is not None:
            for child in reversed(list(self.gateway)):
                await defer.maybeDeferred(child.stopService)
            self.gateway.engine.dispose()
        if self.smsc_port is not None:
            await defer.maybeDeferred(self.smsc_port.stopListening)
        if self.engine is not None:
            self.engine.dispose()
        if self.sim is not None:
            self.sim.close()
        drop_schema(self.water_url, self.water_schema)

    def _select(self, query):
        with self.engine.connect() as conn:
            return [row._asdict() for row in conn.execute(query)]

    async def rows(self, query):
        return await bounded(deferToThread(self._select, query), self.reactor)

    async def until(self, query, predicate, what: str):
        """Re-read until ``predicate(rows)`` holds (bounded: fails, never hangs)."""
        for _ in range(200):
            rows = await self.rows(query)
            if predicate(rows):
                return rows
            await task.deferLater(self.reactor, 0.05, lambda: None)
        raise AssertionError(f"never happened: {what}; last rows {rows}")

    def pay(self, stan: str):
        bill = BillRequestData(biller_code="WTR", service_code="WATER", billing_number="3000000001",
                               msisdn=MSISDN, language="en")
        with Client("127.0.0.1", self.port, timeout=TIMEOUT) as client:
            client.sign_on()
            inquiry = client.inquire(BillRequestData("WTR", "WATER", "3000000001"), stan=f"{int(stan) - 1:06d}")
            paid = client.pay(bill, 15_750, stan=stan)
        return inquiry, paid


@pytest.fixture
def reactor():
    from twisted.internet import reactor as global_reactor

    return global_reactor


@pytest.fixture(params=WATER_DB_KINDS)
def stack(request, reactor, tmp_path, db_url):
    s = WaterStack(reactor, tmp_path, db_url, request.param)
    yield s
    pytest_twisted.blockon(defer.ensureDeferred(s.stop()))


@pytest_twisted.ensureDeferred
async def test_water_receipt_goes_out_only_after_the_batch(stack, reactor):
    await stack.start()
    inquiry, paid = await bounded(deferToThread(stack.pay, "000302"), reactor, 40)
    assert inquiry.fields["39"] == "00"
    assert (dict(decode_tlv(inquiry.fields["48"]))["CN"], dict(decode_tlv(inquiry.fields["48"]))["DA"]) == (
        "Omar Haddad", "15750")
    assert paid.fields["39"] == "00"  # approved once the intake row is committed
    pay_tags = dict(decode_tlv(paid.fields["48"]))
    payment_id, intake_ref = pay_tags["PR"], pay_tags["RN"]
    assert intake_ref.startswith("IN")
    [row] = stack.sim.intake_rows()
    assert (row["payment_id"], row["amount"], row["status"]) == (payment_id, 15_750, "N")

    # The gateway has asked the biller (twice at least) and it is still pending:
    # ACCEPTED, and nothing queued for the subscriber.
    await stack.until(select(biller_outbox), lambda rows: rows and rows[0]["attempts"] >= 2, "two status polls")
    [txn] = await stack.rows(select(transactions).where(transactions.c.id == payment_id))
    assert txn["state"] == "ACCEPTED"
    assert await stack.rows(select(sms_outbox)) == []
    assert stack.smsc.messages_received == []

    result = await bounded(deferToThread(stack.sim.run_batch), reactor)
    assert (result.posted, result.rejected) == (1, 0)
    [message] = await bounded(stack.smsc.wait_for_messages(1), reactor)
    [row] = stack.sim.intake_rows()
    assert row["status"] == "P" and row["receipt"].startswith("WR")
    # The one-part default receipt names the payment by its short reference;
    # the batch's receipt number is what the journal holds (asserted below).
    assert message.text.endswith(f"Ref {payment_id[:10].upper()}") and "15.750 JOD" in message.text
    assert message.destination_addr == MSISDN
    [txn] = await stack.rows(select(transactions).where(transactions.c.id == payment_id))
    assert (txn["state"], txn["biller_receipt"], txn["response_code"]) == ("CONFIRMED", row["receipt"], "00")


@pytest_twisted.ensureDeferred
async def test_batch_rejection_is_an_exception_and_no_sms(stack, reactor):
    await stack.start(RejectingWaterBiller)
    _inquiry, paid = await bounded(deferToThread(stack.pay, "000402"), reactor, 40)
    assert paid.fields["39"] == "00"
    payment_id = dict(decode_tlv(paid.fields["48"]))["PR"]
    result = await bounded(deferToThread(stack.sim.run_batch), reactor)
    assert result.rejected == 1
    await stack.until(select(transactions).where(transactions.c.id == payment_id),
                      lambda rows: rows[0]["state"] == "EXCEPTION", "EXCEPTION after the rejection")
    assert await stack.rows(select(sms_outbox)) == []
    assert stack.smsc.messages_received == []


@pytest_twisted.ensureDeferred
async def test_reversal_of_an_accepted_payment_withdraws_its_intake_row(stack, reactor):
    """The switch reverses (0420) a water payment still in the biller's
    intake: the row is withdrawn, the batch books nothing, no SMS."""
    await stack.start()

    def pay_then_reverse():
        bill = BillRequestData(biller_code="WTR", service_code="WATER", billing_number="3000000002",
                               msisdn=MSISDN, language="en")
        with Client("127.0.0.1", stack.port, timeout=TIMEOUT) as client:
            client.sign_on()
            sent, paid = client.bill_request(PAYMENT_PROCESSING_CODE, bill=bill, amount_minor=8_000,
                                             stan="000502")
            reversal = {k: sent[k] for k in ("3", "4", "12", "13", "32", "37", "41", "49")}
            reversal.update({"7": sent["7"], "11": "000503", "39": "68",
                             "90": "0200" + sent["11"] + sent["7"] + f"{sent['32']:0>11}" + "0" * 11})
            ack = client.exchange("0420", reversal)
        return paid, ack

    paid, ack = await bounded(deferToThread(pay_then_reverse), reactor, 40)
    assert (paid.fields["39"], ack.mti, ack.fields["39"]) == ("00", "0430", "00")
    payment_id = dict(decode_tlv(paid.fields["48"]))["PR"]
    await stack.until(select(transactions).where(transactions.c.id == payment_id),
                      lambda rows: rows[0]["state"] == "REVERSED", "REVERSED after the withdrawal")
    [row] = stack.sim.intake_rows()
    assert (row["payment_id"], row["status"]) == (payment_id, "W")
    assert (await bounded(deferToThread(stack.sim.run_batch), reactor)).posted == 0
    assert await stack.rows(select(sms_outbox)) == []
    assert stack.smsc.messages_received == []
