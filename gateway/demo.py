"""``billgw demo``: the whole product on loopback, end to end, in one command.

It starts the telecom biller simulator, the water biller's tables (an
SQLite file: conf/billers-water.example.toml), the SMSC simulator and the
gateway (SQLite journal) on free loopback ports, then plays a bank switch
with the ``atm-sim`` command in a separate process -- over the wire, as a
real switch would -- making an inquiry and two telecom payments (English and
Arabic receipts), then a water payment: approved once the biller's intake
holds it, its receipt sent only after the demo runs the biller's batch.  It
prints each answer and every SMS the SMSC received, checks each biller's
ledger holds exactly the approved payments, and exits 0 only if all is well.
Logs go to ``<workdir>/gateway.log`` as JSON lines.

It also pays an electricity bill through the same wire messages, on the
electricity host simulator's persistent record link (the ``ELE`` biller of
``conf/billers-electricity.example.toml``), and prints that host's ledger.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tomllib
from importlib import resources
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

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

PAYMENTS = (
    # billing number, amount (JOD), MSISDN, language
    ("0791234567", "12.500", "962791234567", "en"),
    ("0797654321", "8.250", "962797654321", "ar"),
)


# The electricity host (billing_adapters/electricity/): one payment with a receipt.
ELECTRICITY_PAYMENT = ("2000000001", "23.450", "962795550101", "en")
ELECTRICITY_PASSWORD = "demo-pw"


async def _start_electricity(reactor, work: Path):
    from billgw.billing_adapters.electricity.sim import listen_electricity_sim

    return await listen_electricity_sim(reactor, LOOPBACK, db_path=str(work / "electricity-ledger.sqlite"),
                                        password=ELECTRICITY_PASSWORD)


def _electricity_billers(host_port, work: Path) -> dict:
    """The ELE biller of conf/billers-electricity.example.toml, pointed at
    the simulator (no maintenance window: the demo may run at any hour)."""
    import tomllib
    from importlib import resources

    from .config import parse_settings

    text = resources.files("billgw.conf").joinpath("billers-electricity.example.toml").read_text("utf-8")
    biller = parse_settings(tomllib.loads(text), environ={"ELE_PASSWORD": ELECTRICITY_PASSWORD}).billers["ELE"]
    return {"ELE": dataclasses.replace(biller, maintenance=(), adapter_settings={
        **biller.adapter_settings, "port": host_port.getHost().port,
        "ledger": str(work / "electricity-ledger.sqlite")})}


async def _electricity_part(reactor, port: int, smsc, host, problems: list) -> None:
    """Pay an electricity bill like the others, show its SMS and the host's ledger."""
    number, amount, msisdn, lang = ELECTRICITY_PAYMENT
    _banner(f"electricity bill payment {number}: {amount} JOD (fixed-width EBCDIC records over TCP)")
    before = len(smsc.messages_received)
    text, code = await _atm(reactor, port, "pay", "--biller", "ELE", "--service", "HOME",
                            "--billing-number", number, "--amount", amount, "--currency", "400",
                            "--exponent", "3", "--msisdn", msisdn, "--language", lang)
    print(text, end="", flush=True)
    if code != 0:
        problems.append(f"electricity payment for {number} was not approved")
        return
    waiting = smsc.wait_for_messages(before + 1)
    waiting.addTimeout(30, reactor)
    try:
        await waiting
        message = smsc.messages_received[before]
        print(f"SMS to {message.destination_addr}: {message.text}")
    except defer.TimeoutError:
        problems.append("no SMS receipt for the electricity payment")
    _banner("electricity host ledger")
    payments = await host.payments()
    for p in payments:
        bills = ", ".join(f"{number} {part}" for number, part in p.settled)
        print(f"  {p.payment_id}  {p.account}  bills {bills}  {p.amount}  receipt {p.receipt}"
              f"{'  REVERSED' if p.reversed else ''}")
    if len(payments) != 1:
        problems.append(f"the electricity host holds {len(payments)} payments, expected 1")


def _atm_sim() -> str:
    candidate = Path(sys.executable).with_name("atm-sim")
    found = shutil.which("atm-sim")
    return str(candidate) if candidate.exists() else (found or "atm-sim")


async def _atm(reactor, port: int, *args: str) -> tuple[str, int]:
    argv = (args[0], "--host", "127.0.0.1", "--port", str(port), "--timeout", "30") + args[1:]
    out, err, code = await getProcessOutputAndValue(_atm_sim(), argv, env=None, reactor=reactor)
    text = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
    return text, code


def _banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 66 - len(title)), flush=True)


async def run_demo(reactor, workdir: str = "var/demo", config_path: str | None = None) -> None:
    from billgw.billing_adapters.telecom_sim import listen_telecom_sim
    from billgw.billing_adapters.water.sim import WaterBillerSim
    from billgw.sms.smsc_sim import listen_smsc

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
    ele_port, ele_host = await _start_electricity(reactor, work)
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
            **_electricity_billers(ele_port, work)},
        # The water receipt follows the batch within a second or two here,
        # not production's minutes.
        recovery=dataclasses.replace(base.recovery, poll_interval=0.5, retry_base=0.5, retry_cap=1.0,
                                     accepted_poll_delay=0.5),
    )
    await deferToThread(_upgrade, settings)
    gateway = GatewayService(settings, reactor)
    port = (await gateway.start()).getHost().port
    problems = []
    try:
        print(f"gateway on 127.0.0.1:{port}, telecom biller on :{tel_port.getHost().port}, "
              f"SMSC on :{smsc_port.getHost().port}; files in {work}", flush=True)

        _banner("bill inquiry 0791234567 (atm-sim inquire)")
        text, code = await _atm(reactor, port, "inquire", "--biller", "TEL", "--service", "MOBILE",
                                "--billing-number", "0791234567")
        print(text, end="", flush=True)
        if code != 0:
            problems.append("inquiry was not approved")

        for number, amount, msisdn, lang in PAYMENTS:
            _banner(f"bill payment {number}: {amount} JOD, receipt in '{lang}' (atm-sim pay)")
            text, code = await _atm(reactor, port, "pay", "--biller", "TEL", "--service", "MOBILE",
                                    "--billing-number", number, "--amount", amount, "--currency", "400",
                                    "--exponent", "3", "--msisdn", msisdn, "--language", lang)
            print(text, end="", flush=True)
            if code != 0:
                problems.append(f"payment for {number} was not approved")

        _banner("SMS received by the SMSC simulator")
        wanted = len(PAYMENTS)
        waiting = smsc.wait_for_messages(wanted)
        waiting.addTimeout(30, reactor)
        try:
            await waiting
        except defer.TimeoutError:
            problems.append(f"the SMSC received {len(smsc.messages_received)} of {wanted} SMS")
        for message in smsc.messages_received:
            print(f"to {message.destination_addr}: data_coding={message.data_coding} "
                  f"({'UCS-2' if message.data_coding == 8 else 'GSM-7'}), {message.parts} part(s)")
            print(f"  {message.text}")

        await _water(reactor, port, gateway, water, smsc, problems)

        _banner("telecom biller ledger")
        postings = await telecom.postings()
        for p in postings:
            print(f"  {p.payment_id}  {p.subscriber}  bill {p.bill_number}  {p.amount}  receipt {p.receipt_number}")
        if len(postings) != len(PAYMENTS):
            problems.append(f"the biller holds {len(postings)} postings, expected {len(PAYMENTS)}")

        await _electricity_part(reactor, port, smsc, ele_host, problems)
    finally:
        await gateway.stop()
        await defer.maybeDeferred(tel_port.stopListening)
        await defer.maybeDeferred(smsc_port.stopListening)
        await defer.maybeDeferred(ele_port.stopListening)
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
    print(json.dumps({"demo": "ok", "payments": len(PAYMENTS) + 1, "sms": len(smsc.messages_received),
                      "journal": str(work / "journal.sqlite")}))


WATER_ACCOUNT, WATER_AMOUNT, WATER_MSISDN = "3000000001", "15.750", "962795550001"


async def _water_payment(gateway):
    from . import journal as journal_ops

    views = await gateway.pool.run(journal_ops.list_all)
    return next((v for v in views if v.biller_code == "WTR" and v.kind == "payment"), None)


async def _water(reactor, port: int, gateway, water, smsc, problems: list[str]) -> None:
    """A water bill: approved on the intake row, receipted after the batch."""
    from billgw.billing_adapters.water.adapter import read_water_ledger

    before = len(smsc.messages_received)
    _banner(f"water bill payment {WATER_ACCOUNT}: {WATER_AMOUNT} JOD (a database biller)")
    text, code = await _atm(reactor, port, "pay", "--biller", "WTR", "--service", "WATER",
                            "--billing-number", WATER_ACCOUNT, "--amount", WATER_AMOUNT, "--currency", "400",
                            "--exponent", "3", "--msisdn", WATER_MSISDN, "--language", "en")
    print(text, end="", flush=True)
    if code != 0:
        problems.append("the water payment was not approved")
        return
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
    waiting = smsc.wait_for_messages(before + 1)
    waiting.addTimeout(30, reactor)
    try:
        await waiting
    except defer.TimeoutError:
        problems.append("no SMS for the water payment after the batch")
    for message in smsc.messages_received[before:]:
        print(f"to {message.destination_addr}: {message.text}")
    view = await _water_payment(gateway)
    print(f"journal: {view.state.value if view else 'missing'}, biller receipt {view.biller_receipt if view else '-'}")

    _banner("water biller ledger (its intake table)")
    entries = await deferToThread(read_water_ledger, water.tables, water.url)
    for e in entries:
        state = "pending" if e.pending else "rejected" if e.rejected else "reversed" if e.reversed else "booked"
        print(f"  {e.payment_id}  {e.subscriber}  bill {e.bill_number}  {e.amount}  receipt {e.receipt_number}  {state}")
    if [(e.amount, e.pending, e.held) for e in entries] != [(15_750, False, True)]:
        problems.append(f"the water biller holds {len(entries)} entries, expected one booked payment")
