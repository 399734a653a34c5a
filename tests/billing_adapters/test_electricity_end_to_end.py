"""An ATM pays an electricity bill through the same ISO 8583 messages as a
telecom bill: switch (atm-sim's client) -> gateway -> the electricity host
simulator over its persistent record link, then the SMS receipt -- over real
loopback sockets, the gateway built from the packaged configuration plus the
electricity example (conf/billers-electricity.example.toml).

It also shows the gateway owning the adapter's lifecycle: starting the
gateway signs the link on (through GuardedAdapter and the BillerAdapters
service), stopping it closes the link.  SQLite, and PostgreSQL when
BILLGW_TEST_PG_URL is set."""
from __future__ import annotations

import dataclasses
import io
import json
import tomllib
from importlib import resources

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.application.service import Service
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from billgw.atm_sim.client import PAYMENT_PROCESSING_CODE, Client
from billgw.billing_adapters.electricity.sim import RecordThenDropHost, listen_electricity_sim
from billgw.billing_adapters.interface import HealthState
from billgw.gateway.audit import run_command
from billgw.gateway.config import parse_settings, validate_adapters
from billgw.gateway.db import make_engine
from billgw.gateway.migrate import upgrade
from billgw.gateway.schema import transactions
from billgw.gateway.service import GatewayService
from billgw.iso8583.bill_data import BillRequestData, decode_tlv
from billgw.sms.smpp_link import LinkState
from billgw.sms.smsc_sim import listen_smsc
from billing_adapters_helpers import LOOPBACK, within

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

MSISDN = "962795550101"


def conf_text(name: str) -> str:
    return resources.files("billgw.conf").joinpath(name).read_text("utf-8")


def ele(number: str, **kwargs) -> BillRequestData:
    return BillRequestData(biller_code="ELE", service_code="HOME", billing_number=number, **kwargs)


@pytest_twisted.ensureDeferred
async def test_an_atm_pays_an_electricity_bill_and_the_subscriber_gets_the_receipt(tmp_path, db_url):
    ledger_path = str(tmp_path / "electricity-host.sqlite")
    host_port, host = await within(defer.ensureDeferred(
        listen_electricity_sim(reactor, LOOPBACK, db_path=ledger_path, password="pw123")))
    smsc_port, smsc = await within(listen_smsc(reactor, LOOPBACK, system_id="billgw", password="e2e-pw"))
    base = parse_settings(tomllib.loads(conf_text("billgw.toml") + "\n" + conf_text("billers-electricity.example.toml")),
                          environ={"ELE_PASSWORD": "pw123"})
    biller = base.billers["ELE"]
    settings = dataclasses.replace(
        base,
        listener=dataclasses.replace(base.listener, endpoint=LOOPBACK),
        database=dataclasses.replace(base.database, url=db_url, auto_upgrade=False),
        sms=dataclasses.replace(base.sms, host="127.0.0.1", port=smsc_port.getHost().port, system_id="billgw",
                                password="e2e-pw", poll_interval=0.2),
        billers={"ELE": dataclasses.replace(biller, maintenance=(), adapter_settings={
            **biller.adapter_settings, "port": host_port.getHost().port, "ledger": ledger_path})},
    )
    validate_adapters(settings)
    engine = make_engine(settings.database.url, 1)
    await within(deferToThread(upgrade, engine), 30)
    gateway = GatewayService(settings, reactor)
    stopped = False
    try:
        listening = await within(gateway.start(), 20)
        # The gateway's start opened and signed on the link (GuardedAdapter -> adapter.start).
        assert host.requests[:1] == ["SGON"] and len(host.connections) == 1
        assert gateway.billers.health()["ELE"].state is HealthState.UP
        await within(gateway.link.wait_for_state(LinkState.BOUND), 20)

        def switch():
            with Client("127.0.0.1", listening.getHost().port, timeout=15) as client:
                client.sign_on()
                inquiry = client.inquire(ele("2000000002"), stan="000301")
                paid = client.pay(ele("2000000001", msisdn=MSISDN), 23_450, stan="000302")
                unknown = client.pay(ele("2999999999"), 1_000, stan="000303")
            return inquiry, paid, unknown

        inquiry, paid, unknown = await within(deferToThread(switch), 40)
        assert (inquiry.mti, inquiry.fields["39"]) == ("0210", "00")
        inquiry_tags = dict(decode_tlv(inquiry.fields["48"]))
        assert (inquiry_tags["CN"], int(inquiry_tags["DA"]), inquiry_tags["DD"]) == ("Omar Saleh", 27_250, "20260228")
        assert (paid.mti, paid.fields["39"], paid.fields["4"]) == ("0210", "00", "000000023450")
        receipt = dict(decode_tlv(paid.fields["48"]))["RN"]
        assert receipt.startswith("ER")
        assert unknown.fields["39"] == "14"  # the host's E101: invalid billing number

        # The host's ledger and the journal agree on the one payment.
        [posted] = await within(host.payments())
        assert (posted.account, posted.amount, posted.receipt, posted.settled) == (
            "2000000001", 23_450, receipt, (("EB-2000000001-1", 23_450),))

        def journal():
            with engine.connect() as conn:
                return [(r.id, r.state, r.amount, r.biller_receipt) for r in conn.execute(
                    select(transactions).where(transactions.c.kind == "payment",
                                               transactions.c.biller_code == "ELE"))]

        rows = await within(deferToThread(journal))
        assert (posted.payment_id, "CONFIRMED", 23_450, receipt) in rows

        # The receipt reaches the subscriber, after the host recorded it.
        await within(smsc.wait_for_messages(1), 30)
        [sms] = smsc.messages_received
        assert sms.destination_addr == MSISDN
        assert "Paid 23.450 JOD to National Electric - Home, acct 2000000001, bill EB-2000000001-1," in sms.text
        assert sms.text.endswith(f"Ref {posted.payment_id[:10].upper()}")  # the short reference (docs/sms.md)

        # billgw audit reads the host's ledger through the adapter kind.
        def audit():
            out, err = io.StringIO(), io.StringIO()
            code = run_command(settings, [f"ELE={ledger_path}"], as_json=True, out=out, err=err)
            return code, json.loads(out.getvalue()), err.getvalue()

        code, report, err = await within(deferToThread(audit), 30)
        assert (code, err) == (0, ""), report

        for child in reversed(list(gateway)):
            await within(defer.maybeDeferred(child.stopService), 20)
        Service.stopService(gateway)
        stopped = True
        # The gateway's stop closed the link (adapter.stop through the guard).
        assert gateway.billers.health()["ELE"].state is HealthState.STOPPED
        for _ in range(500):
            if not host.connections:
                break
            await within(deferToThread(lambda: None))
        assert host.connections == []
    finally:
        if not stopped:
            for child in reversed(list(gateway)):
                await within(defer.maybeDeferred(child.stopService), 20)
            Service.stopService(gateway)
        gateway.engine.dispose()
        engine.dispose()
        await within(defer.maybeDeferred(host_port.stopListening))
        await within(host.close())
        await within(defer.maybeDeferred(smsc_port.stopListening))


@pytest.mark.parametrize("advised", [False, True], ids=["switch-silent", "switch-advises"])
@pytest_twisted.ensureDeferred
async def test_a_payment_the_host_recorded_before_the_link_dropped_is_settled_by_status(tmp_path, db_url, advised):
    """The host records the payment and the link drops before its answer:
    the ATM is told 91 (in doubt, never "paid") and nothing is posted again.
    The link comes back; the gateway asks the host.  Without word from the
    switch the payment is undone at the host, as the 91 told the switch (no
    receipt); when the switch advises it (0220: the customer was debited) it
    is CONFIRMED and only then does the subscriber get the receipt."""
    ledger_path = str(tmp_path / "electricity-host.sqlite")
    host_port, host = await within(defer.ensureDeferred(listen_electricity_sim(
        reactor, LOOPBACK, db_path=ledger_path, password="pw123", host_class=RecordThenDropHost)))
    smsc_port, smsc = await within(listen_smsc(reactor, LOOPBACK, system_id="billgw", password="e2e-pw"))
    base = parse_settings(tomllib.loads(conf_text("billgw.toml") + "\n" + conf_text("billers-electricity.example.toml")),
                          environ={"ELE_PASSWORD": "pw123"})
    biller = base.billers["ELE"]
    settings = dataclasses.replace(
        base,
        listener=dataclasses.replace(base.listener, endpoint=LOOPBACK),
        database=dataclasses.replace(base.database, url=db_url, auto_upgrade=False),
        sms=dataclasses.replace(base.sms, host="127.0.0.1", port=smsc_port.getHost().port, system_id="billgw",
                                password="e2e-pw", poll_interval=0.2),
        # The in-doubt payment waits status_delay for the switch's word; the
        # advice follows the 91 on the same connection at once, well inside it.
        recovery=dataclasses.replace(base.recovery, status_delay=2.0 if advised else 0.5, poll_interval=0.2,
                                     retry_base=0.2),
        billers={"ELE": dataclasses.replace(biller, maintenance=(), adapter_settings={
            **biller.adapter_settings, "port": host_port.getHost().port, "ledger": ledger_path,
            "reconnect_initial": 0.1})},
    )
    engine = make_engine(settings.database.url, 1)
    await within(deferToThread(upgrade, engine), 30)
    gateway = GatewayService(settings, reactor)
    try:
        listening = await within(gateway.start(), 20)
        await within(gateway.link.wait_for_state(LinkState.BOUND), 20)

        def switch():
            with Client("127.0.0.1", listening.getHost().port, timeout=15) as client:
                client.sign_on()
                fields, answer = client.bill_request(PAYMENT_PROCESSING_CODE, bill=ele("2000000001", msisdn=MSISDN),
                                                     amount_minor=23_450, stan="000401")
                advice = client.exchange("0220", fields) if advised else None
            return answer, advice

        answer, advice = await within(deferToThread(switch), 40)
        assert answer.fields["39"] == "91"  # in doubt: the ATM does not say "paid"
        if advised:
            assert (advice.mti, advice.fields["39"]) == ("0230", "00")
        [posted] = await within(host.payments())
        wanted = "CONFIRMED" if advised else "REVERSED"

        def state():
            with engine.connect() as conn:
                return conn.execute(select(transactions.c.state, transactions.c.biller_receipt)
                                    .where(transactions.c.id == posted.payment_id)).one()

        for _ in range(300):  # bounded: the worker's status query once the link is back
            current = await within(deferToThread(state))
            if current.state == wanted:
                break
            await _pause(0.05)
        assert current.state == wanted
        [after] = await within(host.payments())
        assert host.requests.count("PAYR") == 1 and "STAR" in host.requests  # settled by asking, never re-posted
        if advised:
            assert current.biller_receipt == posted.receipt and not after.reversed
            await within(smsc.wait_for_messages(1), 30)
            assert smsc.messages_received[0].text.endswith(f"Ref {posted.payment_id[:10].upper()}")
        else:
            assert after.reversed and "REVR" in host.requests
            await within(gateway.sender.wake())  # every receipt committed so far was sent: none
            assert smsc.messages_received == []
    finally:
        for child in reversed(list(gateway)):
            await within(defer.maybeDeferred(child.stopService), 20)
        Service.stopService(gateway)
        gateway.engine.dispose()
        engine.dispose()
        await within(defer.maybeDeferred(host_port.stopListening))
        await within(host.close())
        await within(defer.maybeDeferred(smsc_port.stopListening))


async def _pause(seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)
