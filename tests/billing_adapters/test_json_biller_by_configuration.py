"""A new JSON biller joins by configuration alone: two billers, each a
``[billers.<CODE>]`` table with ``adapter = "json"`` and no line of Python,
are inquired and paid by a switch through the gateway's ISO 8583 wire, over
real loopback sockets, against two simulators with their own ledgers -- and
``billgw audit``, reading each ledger through its adapter, finds the journal
and the ledgers in agreement, and names a payment the biller undid
(SQLite, and PostgreSQL when configured).
"""
from __future__ import annotations

import io
import json

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.application.service import Service
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from billgw.atm_sim.client import PAYMENT_PROCESSING_CODE, Client
from billgw.billing_adapters.json_biller.ledger import reverse, seed_ledger
from billgw.billing_adapters.json_biller.sim import DownJsonBiller, listen_json_biller
from billgw.gateway.audit import run_command
from billgw.gateway.config import load_settings, validate_adapters
from billgw.gateway.db import make_engine
from billgw.gateway.migrate import upgrade
from billgw.gateway.schema import transactions
from billgw.gateway.service import GatewayService
from billgw.iso8583.bill_data import BillRequestData, decode_tlv
from billing_adapters_helpers import LOOPBACK, within

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

# Everything the gateway knows about the two billers: this text.
CONFIG = """\
[gateway]
listen = "tcp:0:interface=127.0.0.1"

[database]
url = "{db_url}"
auto_upgrade = false

[sms]
enabled = false

[billers.WAT]
name_en = "City Water"
adapter = "json"
timeout = 5.0

[billers.WAT.settings]
url = "http://127.0.0.1:{water_port}/api/v1"
service_names = {{ HOME = "WATER" }}

[billers.WAT.services.HOME]
currency = "400"
currency_code = "JOD"
exponent = 3
billing_number_pattern = "^[0-9]{{10}}$"

[billers.MUN]
name_en = "Municipality"
adapter = "json"
timeout = 5.0
max_concurrent = 4

[billers.MUN.settings]
url = "http://127.0.0.1:{muni_port}/municipality/v1"
supports_reversal = false
error_codes = {{ M_CLOSED = "cutoff_passed" }}

[billers.MUN.services.WASTE]
currency = "400"
currency_code = "JOD"
exponent = 3
"""


def bill(biller: str, service: str, number: str) -> BillRequestData:
    return BillRequestData(biller_code=biller, service_code=service, billing_number=number)


@pytest_twisted.ensureDeferred
async def test_two_json_billers_from_configuration_alone(tmp_path, db_url):
    water_ledger = seed_ledger("WATER", bill_prefix="WB", receipt_prefix="WR")
    muni_ledger = seed_ledger("WASTE", bill_prefix="MB", receipt_prefix="MR")
    water_port, _ = await within(listen_json_biller(reactor, LOOPBACK, ledger=water_ledger))
    muni_port, _ = await within(listen_json_biller(reactor, LOOPBACK, ledger=muni_ledger,
                                                   base_path="/municipality/v1"))
    path = tmp_path / "billgw.toml"
    path.write_text(CONFIG.format(db_url=db_url, water_port=water_port.getHost().port,
                                  muni_port=muni_port.getHost().port), encoding="utf-8")
    settings = load_settings(path, environ={})
    validate_adapters(settings)
    engine = make_engine(settings.database.url, 1)
    await within(deferToThread(upgrade, engine))
    gateway = GatewayService(settings, reactor)
    try:
        listening = await within(gateway.start())
        assert not gateway.processor.route("MUN").adapter.capabilities.can_reverse

        def switch():
            with Client("127.0.0.1", listening.getHost().port, timeout=10) as client:
                signed = client.sign_on()
                inquiry = client.inquire(bill("WAT", "HOME", "1000000002"), stan="000201")
                water = client.pay(bill("WAT", "HOME", "1000000001"), 12_500, stan="000202")
                muni = client.pay(bill("MUN", "WASTE", "1000000002"), 4_000, stan="000203")
                unknown = client.pay(bill("MUN", "WASTE", "1999999999"), 100, stan="000204")
            return signed, inquiry, water, muni, unknown

        signed, inquiry, water, muni, unknown = await within(deferToThread(switch), 30)
        assert signed.fields["39"] == "00"
        assert (inquiry.mti, inquiry.fields["39"]) == ("0210", "00")
        tags = dict(decode_tlv(inquiry.fields["48"]))
        assert (tags["CN"], int(tags["DA"]), tags["DD"]) == ("Yousef Amin", 17_500, "20260331")
        assert water.fields["48"] and dict(decode_tlv(water.fields["48"]))["RN"].startswith("WR")
        assert (water.fields["39"], muni.fields["39"]) == ("00", "00")
        assert unknown.fields["39"] == "14"  # BILLING_NUMBER_NOT_FOUND -> invalid billing number

        def journal():
            with engine.connect() as conn:
                return {(r.biller_code, r.state, r.amount, r.biller_receipt): r.id for r in conn.execute(
                    select(transactions).where(transactions.c.kind == "payment"))}

        rows = await within(deferToThread(journal))
        [water_payment] = water_ledger.payments.values()
        [muni_payment] = muni_ledger.payments.values()
        assert rows[("WAT", "CONFIRMED", 12_500, water_payment.receipt_number)] == water_payment.payment_id
        assert rows[("MUN", "CONFIRMED", 4_000, muni_payment.receipt_number)] == muni_payment.payment_id
        assert water_payment.receipt_number.startswith("WR") and muni_payment.receipt_number.startswith("MR")
        assert (muni_payment.bill_number, muni_payment.service) == ("MB-1000000002-1", "WASTE")
        assert water_payment.service == "WATER"  # the configured service name travelled

        # billgw audit reads both ledgers through the adapters (the
        # reconciliation listing), off the reactor thread that serves them.
        def audit(*ledgers):
            out, err = io.StringIO(), io.StringIO()
            code = run_command(settings, list(ledgers), as_json=True, out=out, err=err)
            return code, json.loads(out.getvalue()) if out.getvalue() else None, err.getvalue()

        water_url = f"http://127.0.0.1:{water_port.getHost().port}/api/v1"
        muni_url = f"http://127.0.0.1:{muni_port.getHost().port}/municipality/v1"
        code, report, err = await within(deferToThread(audit, f"WAT={water_url}", f"MUN={muni_url}"), 30)
        assert (code, err) == (0, ""), report
        # The biller undoes a payment on its own: the audit names it.
        reverse(muni_ledger, muni_payment.payment_id)
        code, report, err = await within(deferToThread(audit, f"WAT={water_url}", f"MUN={muni_url}"), 30)
        assert code == 1
        assert [(f["category"], f["payment_id"]) for f in report["findings"]] == [
            ("confirmed_missing_at_biller", muni_payment.payment_id)]
        await within(muni_port.stopListening())
        code, _, err = await within(deferToThread(audit, f"MUN={muni_url}"), 30)
        assert code == 2 and err.startswith("billgw audit: --ledger MUN: cannot read http://127.0.0.1:")
    finally:
        for child in reversed(list(gateway)):
            await within(defer.maybeDeferred(child.stopService))
        Service.stopService(gateway)
        gateway.engine.dispose()
        engine.dispose()
        await within(water_port.stopListening())
        await within(defer.maybeDeferred(muni_port.stopListening))


@pytest_twisted.ensureDeferred
async def test_the_breaker_answers_91_at_once_while_the_biller_is_down(tmp_path, db_url):
    """Behind the gateway: a biller that drops every request leaves the first
    payments in doubt; once the breaker opens, the next is declined 91 at
    once, journaled as never sent, and the biller sees nothing of it."""
    down_ledger = seed_ledger("WATER")
    down_port, down = await within(listen_json_biller(reactor, LOOPBACK, ledger=down_ledger,
                                                      resource_class=DownJsonBiller))
    spare_port, _ = await within(listen_json_biller(reactor, LOOPBACK, ledger=seed_ledger("WASTE")))
    text = CONFIG.format(db_url=db_url, water_port=down_port.getHost().port, muni_port=spare_port.getHost().port)
    text = text.replace("[billers.WAT.settings]", "[billers.WAT.breaker]\nfailure_threshold = 2\n"
                                                  "open_seconds = 600\nmax_open_seconds = 600\n\n"
                                                  "[billers.WAT.settings]")
    path = tmp_path / "billgw.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path, environ={})
    engine = make_engine(settings.database.url, 1)
    await within(deferToThread(upgrade, engine))
    gateway = GatewayService(settings, reactor)
    try:
        listening = await within(gateway.start())

        def switch():
            with Client("127.0.0.1", listening.getHost().port, timeout=10) as client:
                client.sign_on()
                return [client.pay(bill("WAT", "HOME", "1000000001"), 100, stan=f"00030{i}") for i in range(3)]

        answers = await within(deferToThread(switch), 30)
        assert [a.fields["39"] for a in answers] == ["91", "91", "91"]
        assert down.requests == 2  # the third never left the gateway

        def journal():
            with engine.connect() as conn:
                return [(r.state, r.detail) for r in conn.execute(
                    select(transactions.c.state, transactions.c.detail)
                    .where(transactions.c.kind == "payment").order_by(transactions.c.created_at))]

        rows = await within(deferToThread(journal))
        assert [state for state, _ in rows] == ["IN_DOUBT", "IN_DOUBT", "DECLINED"]
        assert "circuit open" in rows[2][1]
        assert gateway.billers.health()["WAT"].state.value == "down"
        assert down_ledger.payments == {}
    finally:
        for child in reversed(list(gateway)):
            await within(defer.maybeDeferred(child.stopService))
        Service.stopService(gateway)
        gateway.engine.dispose()
        engine.dispose()
        await within(down_port.stopListening())
        await within(spare_port.stopListening())
