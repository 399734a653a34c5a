"""The billers of ``billgw demo`` beside the telecom's: the electricity host
and a JSON biller, each a real server on loopback with its biller table
taken from the packaged example (``conf/billers-*.example.toml``), and each
biller's ledger as plain :class:`LedgerEntry` rows, so the demo prints and
checks every biller's ledger the same way.

The water biller's tables live in :mod:`billgw.gateway.demo` (its
``settings_with_water`` is what an operator trying the example runs too).
"""
from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path

from billgw.billing_adapters.interface import LedgerEntry

from .config import BillerSettings, parse_settings

ELECTRICITY_EXAMPLE = "billers-electricity.example.toml"
JSON_EXAMPLE = "billers-json.example.toml"
ELECTRICITY_PASSWORD = "demo-pw"
JSON_BILLER = "WAT"  # the example's first JSON biller (City Water)
JSON_SERVICE = "WATER"  # the biller's own name for its service (the example's service_names)


def _example_biller(example: str, code: str, environ: dict[str, str]) -> BillerSettings:
    """One biller of a packaged example file, as the gateway parses it,
    without its maintenance windows (the demo may run at any hour)."""
    text = resources.files("billgw.conf").joinpath(example).read_text("utf-8")
    biller = parse_settings(tomllib.loads(text), environ=environ).billers[code]
    return dataclasses.replace(biller, maintenance=())


# --- the electricity host (fixed-width EBCDIC records over one TCP link) -----------------

async def start_electricity(reactor, work: Path, endpoint: str):
    """The host simulator, its ledger an SQLite file in ``work``: (port, host)."""
    from billgw.billing_adapters.electricity.sim import listen_electricity_sim

    return await listen_electricity_sim(reactor, endpoint, db_path=str(work / "electricity-ledger.sqlite"),
                                        password=ELECTRICITY_PASSWORD)


def electricity_billers(host_port, work: Path) -> dict[str, BillerSettings]:
    """The ELE biller of the example, pointed at the simulator."""
    biller = _example_biller(ELECTRICITY_EXAMPLE, "ELE", {"ELE_PASSWORD": ELECTRICITY_PASSWORD})
    return {"ELE": dataclasses.replace(biller, adapter_settings={
        **biller.adapter_settings, "port": host_port.getHost().port,
        "ledger": str(work / "electricity-ledger.sqlite")})}


async def electricity_ledger(host) -> list[LedgerEntry]:
    payments = await host.payments()
    return [LedgerEntry(payment_id=p.payment_id, subscriber=p.account,
                        bill_number=",".join(number for number, _part in p.settled), amount=p.amount,
                        receipt_number=p.receipt, reversed=p.reversed, posted_at="")
            for p in payments]


# --- a JSON biller (the bill-pull / payment-notification interface) ---------------------

async def start_json_biller(reactor, endpoint: str):
    """The JSON biller simulator with the example's sample accounts:
    (port, its in-memory ledger)."""
    from billgw.billing_adapters.json_biller.ledger import seed_ledger
    from billgw.billing_adapters.json_biller.sim import listen_json_biller

    ledger = seed_ledger(JSON_SERVICE, bill_prefix="WB")
    port, _resource = await listen_json_biller(reactor, endpoint, ledger=ledger)
    return port, ledger


def json_billers(port) -> dict[str, BillerSettings]:
    """The example's JSON biller, added by configuration alone, pointed at
    the simulator."""
    biller = _example_biller(JSON_EXAMPLE, JSON_BILLER, {})
    url = f"http://127.0.0.1:{port.getHost().port}/api/v1"
    return {JSON_BILLER: dataclasses.replace(biller, adapter_settings={**biller.adapter_settings, "url": url})}


def json_ledger(ledger) -> list[LedgerEntry]:
    return [LedgerEntry(payment_id=p.payment_id, subscriber=p.billing_number, bill_number=p.bill_number,
                        amount=p.amount, receipt_number=p.receipt_number, reversed=p.reversed,
                        posted_at=p.recorded_at)
            for p in sorted(ledger.payments.values(), key=lambda p: p.order)]


def ledger_lines(entries: list[LedgerEntry]) -> list[str]:
    """A biller's ledger as the demo prints it, one line a payment."""
    def state(e: LedgerEntry) -> str:
        return "pending" if e.pending else "rejected" if e.rejected else "REVERSED" if e.reversed else "recorded"

    return [f"  {e.payment_id}  {e.subscriber}  bill {e.bill_number}  {e.amount}  receipt {e.receipt_number}  "
            f"{state(e)}" for e in entries] or ["  (nothing)"]
