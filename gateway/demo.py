"""``billgw demo``: the whole product on loopback, end to end, in one command.

It starts a biller of each kind -- the telecom's SOAP service, the water
biller's own tables (an SQLite file: conf/billers-water.example.toml), the
electricity host's fixed-width EBCDIC record link and a JSON biller added by
configuration alone (conf/billers-electricity.example.toml,
conf/billers-json.example.toml), each a real server or database -- the SMSC
simulator and the gateway (SQLite journal) on free loopback ports, then
plays a bank switch with the ``atm-sim`` command in a separate process
(over the wire, as a real switch would): an inquiry, two telecom payments
(English and Arabic receipts), an electricity and a JSON biller's payment,
each followed by its SMS receipt; then a water payment, approved once the
biller's intake holds it, its receipt sent only after the demo runs the
biller's batch.  It prints each answer, each SMS and every biller's ledger,
and exits 0 only if every payment was approved, is CONFIRMED once in the
journal, is held once by its biller with the journal's receipt, and got one
SMS (:func:`payment_problems`).  Its last line counts what it did.  Logs go
to ``<workdir>/gateway.log`` as JSON lines.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from billgw.billing_adapters.interface import LedgerEntry

from . import demo_billers
from .config import Settings, parse_settings

WATER_EXAMPLE = "billers-water.example.toml"


def settings_with_water(config_path: str | None, water_url: str, *, environ=None) -> Settings:
    """The configuration with the water biller of conf/billers-water.example.toml
    appended (unless it has a WTR biller of its own), its database at
    ``water_url``: what ``billgw demo`` runs, and what an operator trying
    the example does by hand."""
    if config_path is None:
        base = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
        source = "billgw.conf/billgw.toml"
    else:
        base, source = Path(config_path).read_text("utf-8"), str(config_path)
    data = tomllib.loads(base)
    if "WTR" not in data.get("billers", {}):
        example = resources.files("billgw.conf").joinpath(WATER_EXAMPLE).read_text("utf-8")
        data = tomllib.loads(base + "\n" + example)
        source += f" + {WATER_EXAMPLE}"
    env = {**(os.environ if environ is None else environ), "BILLGW_WATER_DB_URL": water_url}
    return parse_settings(data, base=Path.cwd(), environ=env, source=source)


LOOPBACK = "tcp:0:interface=127.0.0.1"
SMSC_SYSTEM_ID = "billgw"
SMSC_PASSWORD = "demo-pw"
SMS_WAIT = 30.0  # seconds a receipt may take to reach the SMSC


@dataclass(frozen=True)
class DemoPayment:
    """One bill the demo pays, and the phone its receipt goes to."""

    biller: str
    service: str
    billing_number: str
    amount: str  # JOD, three decimals
    msisdn: str
    language: str
    how: str  # how this biller takes a payment, for the banner

    @property
    def minor_units(self) -> int:
        return int(Decimal(self.amount).scaleb(3))

    @property
    def label(self) -> str:
        return f"{self.biller} {self.billing_number} {self.amount} JOD"


# Paid one after the other, each receipted before the next; the water
# biller's (WATER_PAYMENT) has its own steps around the biller's batch.
PAYMENTS = (
    DemoPayment("TEL", "MOBILE", "0791234567", "12.500", "962791234567", "en", "a SOAP web service"),
    DemoPayment("TEL", "MOBILE", "0797654321", "8.250", "962797654321", "ar", "a SOAP web service"),
    DemoPayment("ELE", "HOME", "2000000001", "23.450", "962795550101", "en",
                "fixed-width EBCDIC records over one TCP link"),
    DemoPayment(demo_billers.JSON_BILLER, "HOME", "1000000001", "12.500", "962795550201", "en",
                "the JSON bill-pull interface, configured only"),
)
WATER_PAYMENT = DemoPayment("WTR", "WATER", "3000000001", "15.750", "962795550001", "en",
                            "a database biller: its intake table, booked by its batch")


def payment_problems(payment: DemoPayment, approved: bool, views, ledger: list[LedgerEntry],
                     messages) -> list[str]:
    """What is wrong with one demo payment, by what each party holds: the
    ATM approved it, the journal has it CONFIRMED once, the biller's ledger
    holds it once (booked, the amount paid, the receipt the journal has),
    and its phone got exactly one SMS."""
    if not approved:
        return [f"{payment.label}: not approved"]
    mine = [v for v in views if v.kind == "payment" and v.biller_code == payment.biller
            and v.billing_number == payment.billing_number]
    if len(mine) != 1:
        return [f"{payment.label}: the journal holds {len(mine)} payments, expected 1"]
    view, problems = mine[0], []
    if view.state.value != "CONFIRMED":
        problems.append(f"{payment.label}: {view.state.value} in the journal, expected CONFIRMED")
    held = [e for e in ledger if e.subscriber == payment.billing_number and e.held]
    if [(e.payment_id, e.amount) for e in held] != [(view.id, payment.minor_units)]:
        problems.append(f"{payment.label}: the biller holds "
                        f"{[(e.payment_id, e.amount) for e in held]}, expected once {view.id}")
    elif held[0].pending:
        problems.append(f"{payment.label}: still pending in the biller's intake")
    elif held[0].receipt_number != view.biller_receipt:
        problems.append(f"{payment.label}: the biller's receipt {held[0].receipt_number}, "
                        f"the journal's {view.biller_receipt}")
    sent = [m for m in messages if m.destination_addr.lstrip("+") == payment.msisdn]
    if len(sent) != 1:
        problems.append(f"{payment.label}: {len(sent)} SMS to {payment.msisdn}, expected one receipt")
    return problems


def _atm_sim() -> str:
    candidate = Path(sys.executable).with_name("atm-sim")
    found = shutil.which("atm-sim")
    return str(candidate) if candidate.exists() else (found or "atm-sim")


async def _atm(reactor, port: int, *args: str) -> tuple[str, int]:
    argv = (args[0], "--host", "127.0.0.1", "--port", str(port), "--timeout", "30") + args[1:]
    out, err, code = await getProcessOutputAndValue(_atm_sim(), argv, env=None, reactor=reactor)
    text = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
    return text, code


async def _atm_pay(reactor, port: int, payment: DemoPayment) -> bool:
    """The switch's 0200 through ``atm-sim pay``: True when approved."""
    text, code = await _atm(reactor, port, "pay", "--biller", payment.biller, "--service", payment.service,
                            "--billing-number", payment.billing_number, "--amount", payment.amount,
                            "--currency", "400", "--exponent", "3", "--msisdn", payment.msisdn,
                            "--language", payment.language)
    print(text, end="", flush=True)
    return code == 0


async def _sms_to(reactor, smsc, msisdn: str, bound: float) -> list:
    """The SMS the SMSC holds for ``msisdn``, once there is one (or after ``bound`` s)."""
    for _ in range(int(bound / 0.2)):
        sent = [m for m in smsc.messages_received if m.destination_addr.lstrip("+") == msisdn]
        if sent:
            return sent
        await task.deferLater(reactor, 0.2, lambda: None)
    return []


def _print_sms(message) -> None:
    coding = "UCS-2" if message.data_coding == 8 else "GSM-7"
    print(f"SMS to {message.destination_addr} ({coding}, {message.parts} part(s)): {message.text}", flush=True)


async def _pay_and_receipt(reactor, port: int, smsc, payment: DemoPayment) -> bool:
    _banner(f"{payment.label}, receipt in '{payment.language}' ({payment.how})")
    approved = await _atm_pay(reactor, port, payment)
    if approved:
        for message in await _sms_to(reactor, smsc, payment.msisdn, SMS_WAIT):
            _print_sms(message)
    return approved


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 66 - len(title)), flush=True)


async def run_demo(reactor, workdir: str = "var/demo", config_path: str | None = None) -> None:
    from billgw.billing_adapters.telecom_sim import listen_telecom_sim
    from billgw.billing_adapters.water.adapter import read_water_ledger
    from billgw.billing_adapters.water.sim import WaterBillerSim
    from billgw.sms.smsc_sim import listen_smsc

    from . import journal as journal_ops
    from . import log_setup
    from .cli import _upgrade
    from .exposure import open_private
    from .service import GatewayService

    work = Path(workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log_file = open_private(work / "gateway.log")  # owner-only, like the journal
    log_setup.configure("json", "info", stream=log_file)

    tel_port, telecom = await listen_telecom_sim(reactor, LOOPBACK, db_path=str(work / "telecom-ledger.sqlite"))
    smsc_port, smsc = await listen_smsc(reactor, LOOPBACK, system_id=SMSC_SYSTEM_ID, password=SMSC_PASSWORD,
                                        record_path=str(work / "smsc-received.jsonl"))
    ele_port, ele_host = await demo_billers.start_electricity(reactor, work, LOOPBACK)
    json_port, json_ledger = await demo_billers.start_json_biller(reactor, LOOPBACK)
    water_url = f"sqlite:///{work / 'water-biller.sqlite'}"
    water = WaterBillerSim(water_url)
    await deferToThread(water.create)
    base = settings_with_water(config_path, water_url)
    tel = base.billers["TEL"]
    settings = dataclasses.replace(
        base,
        listener=dataclasses.replace(base.listener, endpoint=LOOPBACK),
        database=dataclasses.replace(base.database, url=f"sqlite:///{work / 'journal.sqlite'}"),
        sms=dataclasses.replace(base.sms, host="127.0.0.1", port=smsc_port.getHost().port,
                                system_id=SMSC_SYSTEM_ID, password=SMSC_PASSWORD, poll_interval=0.5),
        billers={"TEL": dataclasses.replace(tel, adapter_settings={
            **tel.adapter_settings, "url": f"http://127.0.0.1:{tel_port.getHost().port}/BillingService"}),
            "WTR": base.billers["WTR"],
            **demo_billers.electricity_billers(ele_port, work),
            **demo_billers.json_billers(json_port)},
        # The water receipt follows the batch within a second or two here,
        # not production's minutes.
        recovery=dataclasses.replace(base.recovery, poll_interval=0.5, retry_base=0.5, retry_cap=1.0,
                                     accepted_poll_delay=0.5),
    )
    await deferToThread(_upgrade, settings)
    gateway = GatewayService(settings, reactor)
    port = (await gateway.start()).getHost().port
    approved: dict[DemoPayment, bool] = {}
    problems = []
    try:
        print(f"gateway on 127.0.0.1:{port}, telecom biller on :{tel_port.getHost().port}, electricity host "
              f"on :{ele_port.getHost().port}, JSON biller on :{json_port.getHost().port}, SMSC on "
              f":{smsc_port.getHost().port}; files in {work}", flush=True)

        _banner("bill inquiry 0791234567 (atm-sim inquire)")
        text, code = await _atm(reactor, port, "inquire", "--biller", "TEL", "--service", "MOBILE",
                                "--billing-number", "0791234567")
        print(text, end="", flush=True)
        if code != 0:
            problems.append("inquiry was not approved")

        for payment in PAYMENTS:
            approved[payment] = await _pay_and_receipt(reactor, port, smsc, payment)
        approved[WATER_PAYMENT] = await _water(reactor, port, gateway, water, smsc, problems)

        ledgers = {
            "TEL": ("telecom biller ledger (its SOAP service's database)", await telecom.postings()),
            "WTR": ("water biller ledger (its intake table)",
                    await deferToThread(read_water_ledger, water.tables, water.url)),
            "ELE": ("electricity host ledger", await demo_billers.electricity_ledger(ele_host)),
            demo_billers.JSON_BILLER: ("JSON biller ledger", demo_billers.json_ledger(json_ledger)),
        }
        for title, entries in ledgers.values():
            _banner(title)
            print("\n".join(demo_billers.ledger_lines(entries)), flush=True)
        views = await gateway.pool.run(journal_ops.list_all)
        for payment, ok in approved.items():
            problems += payment_problems(payment, ok, views, ledgers[payment.biller][1], smsc.messages_received)
        for code, (title, entries) in ledgers.items():
            paid = sum(1 for p in approved if p.biller == code)
            if len(entries) != paid:
                problems.append(f"{title}: {len(entries)} payments, the demo made {paid}")
    finally:
        await gateway.stop()
        await defer.maybeDeferred(tel_port.stopListening)
        await defer.maybeDeferred(smsc_port.stopListening)
        await defer.maybeDeferred(ele_port.stopListening)
        await defer.maybeDeferred(json_port.stopListening)
        await ele_host.close()
        if hasattr(telecom, "close"):
            await defer.maybeDeferred(telecom.close)
        water.close()
        log_file.flush()

    _banner("result")
    if problems:
        for p in problems:
            print(f"PROBLEM: {p}")
        raise SystemExit(1)
    print(json.dumps({"demo": "ok", "payments": len(approved), "approved": sum(approved.values()),
                      "billers": sorted({p.biller for p in approved}), "sms": len(smsc.messages_received),
                      "journal": str(work / "journal.sqlite")}))


async def _water_payment(gateway):
    from . import journal as journal_ops

    views = await gateway.pool.run(journal_ops.list_all)
    return next((v for v in views if v.biller_code == "WTR" and v.kind == "payment"), None)


async def _water(reactor, port: int, gateway, water, smsc, problems: list[str]) -> bool:
    """A water bill: approved on the intake row, receipted after the batch
    (True when approved)."""
    payment = WATER_PAYMENT
    before = len(smsc.messages_received)
    _banner(f"{payment.label} ({payment.how})")
    if not await _atm_pay(reactor, port, payment):
        return False
    # Let the gateway poll the biller a few times: its batch has not run.
    await task.deferLater(reactor, 3.0, lambda: None)
    view = await _water_payment(gateway)
    state = view.state.value if view else "missing"
    print(f"journal: {state} (approved, in the biller's intake); intake rows: "
          + ", ".join(f"{r['payment_id'][:8]}.. {r['status']}" for r in water.intake_rows()))
    print(f"SMS for the water payment so far: {len(smsc.messages_received) - before}", flush=True)
    if state != "ACCEPTED" or len(smsc.messages_received) != before:
        problems.append(f"before the batch the water payment was {state} with "
                        f"{len(smsc.messages_received) - before} SMS (expected ACCEPTED, none)")

    _banner("the water biller's batch runs (billgw water-sim --batch-now)")
    result = await deferToThread(water.run_batch)
    print(f"batch: {result.posted} posted, {result.rejected} rejected", flush=True)
    for message in await _sms_to(reactor, smsc, payment.msisdn, SMS_WAIT):
        _print_sms(message)
    view = await _water_payment(gateway)
    print(f"journal: {view.state.value if view else 'missing'}, biller receipt {view.biller_receipt if view else '-'}")
    return True
