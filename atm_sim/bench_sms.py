"""The bench's SMS rows: receipts drained per second, window 1 against window 10.

The ``sms/s`` column of the payment rows counts receipts while payments
arrive; these rows measure the sender alone, from a backlog: the gateway
(SQLite journal) takes ``count`` payments while its SMSC is not yet up, so
every receipt waits in the outbox (an outage spends no attempts); then
``billgw smsc-sim --answer-delay`` starts, answering each submit_sm after
``answer_delay`` seconds (an SMSC's round trip), and the rate is the
receipts the SMSC recorded over the time between its first and last one.
With a round trip of 20 ms, window 1 cannot pass 50 receipts/s; a window of
10 keeps ten submits in flight.  Figures are printed and written, never
asserted.  Like the rest of the bench, it talks to the servers only over
loopback.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import task

from . import bench_load
from .bench import BIN, Child, RowSpec, count_lines, free_port, gateway_config, shape_for, wait_for_port
from .bench_procs import BOUND

ANSWER_DELAY = 0.02  # seconds: the SMSC's round trip per submit_sm


@dataclass
class SmsDrainResult:
    window: int
    receipts: int
    seconds: float | None
    per_second: float | None
    answer_delay: float = ANSWER_DELAY


def _config(base: str, window: int) -> str:
    # Reconnect quickly once the SMSC appears; everything else as the payment rows.
    return base.replace("rate = 5000.0\n", f"rate = 5000.0\nwindow = {window}\n"
                                            "reconnect_initial = 0.1\nreconnect_max = 0.5\n", 1)


def _received_at(record: Path) -> list[float]:
    with open(record, encoding="utf-8") as handle:
        return [json.loads(line)["received_at"] for line in handle if line.strip()]


async def run_sms_drain_row(reactor, workdir: Path, *, window: int, count: int) -> SmsDrainResult:
    rowdir = workdir / f"sms-drain-w{window}"
    rowdir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        port, smsc_port, record = free_port(), free_port(), rowdir / "sms.jsonl"
        config = rowdir / "billgw.toml"
        config.write_text(_config(gateway_config(port=port, db_url=f"sqlite:///{rowdir / 'journal.sqlite'}",
                                                 smsc_port=smsc_port, biller="instant", telecom_port=None),
                                  window), encoding="utf-8")
        gateway = Child(reactor, [str(BIN / "billgw"), "--config", str(config), "serve"], rowdir, "gateway")
        children.append(gateway)
        await wait_for_port(reactor, port, gateway)
        spec = RowSpec(f"sms-drain-w{window}", "gateway", count, 10, 4, "sqlite")
        load = await bench_load.run_load(
            reactor, lambda argv, name: Child(reactor, argv, rowdir, name), str(BIN / "atm-sim"), shape_for(spec),
            port, rowdir)
        approved = load.approved
        smsc = Child(reactor, [str(BIN / "billgw"), "smsc-sim", "--listen", f"tcp:{smsc_port}:interface=127.0.0.1",
                               "--password", "bench-pw", "--record", str(record),
                               "--answer-delay", str(ANSWER_DELAY)], rowdir, "smsc")
        children.append(smsc)
        # Drained: every approved payment's receipt recorded, or the record
        # stopped growing (bounded either way).
        last, last_change = 0, time.monotonic()
        while last < approved and time.monotonic() - last_change < BOUND / 4:
            await task.deferLater(reactor, 0.2, lambda: None)
            now = count_lines(record)
            if now != last:
                last, last_change = now, time.monotonic()
        times = _received_at(record) if last else []
        span = (max(times) - min(times)) if len(times) > 1 else None
        rate = round((len(times) - 1) / span, 1) if span else None
        return SmsDrainResult(window, len(times), round(span, 3) if span else None, rate)
    finally:
        for child in reversed(children):
            await child.stop(reactor)


async def run_sms_drain(reactor, workdir: Path, *, quick: bool) -> list[SmsDrainResult]:
    count = 200 if quick else 1000
    results = []
    for window in (1, 10):
        print(f"bench: sms-drain window {window} ({count} receipts, SMSC round trip "
              f"{ANSWER_DELAY * 1000:.0f} ms) ...", flush=True)
        results.append(await run_sms_drain_row(reactor, workdir, window=window, count=count))
    return results


def render_sms_drain(results: list[SmsDrainResult]) -> str:
    lines = [f"{'sms drain':<14} {'window':>6} {'receipts':>8} {'seconds':>8} {'receipts/s':>10}"]
    for r in results:
        seconds = "-" if r.seconds is None else f"{r.seconds:.2f}"
        rate = "-" if r.per_second is None else f"{r.per_second:.1f}"
        lines.append(f"{'sms-drain':<14} {r.window:>6} {r.receipts:>8} {seconds:>8} {rate:>10}")
    return "\n".join(lines)
