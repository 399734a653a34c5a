"""``atm-sim bench --soak SECONDS`` (``make bench-soak``): does the gateway's memory settle?

The gateway (SQLite journal, SMS to the simulator) runs under a steady
open-loop load -- ``RATE`` payments per second, well inside what it
sustains, so the run measures memory, not a backlog -- for SECONDS, while
its resident set size (``VmRSS`` in ``/proc/PID/status``) is sampled every
``SAMPLE_EVERY`` seconds.  Growth is counted after a warm-up (caches,
compiled statements, thread stacks, the allocator's arenas): the target is
no growth beyond it.  The samples are printed and written as JSON; nothing
is asserted, and the last line is ``bench summary: soak ...``.  Not in CI:
it lasts as long as asked (10 minutes from the Makefile).

The biller is the telecom simulator, a process of its own, as a biller is
in production: the in-process ``instant`` biller keeps every payment it
was ever paid in memory (its ledger, which status queries read), and the
first soak measured exactly that -- about 350 bytes per payment, 2 MiB a
minute at 100/s (tracemalloc: ``InstantBiller.pay``'s ``_held``) -- not
the gateway.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task

from . import bench_load
from .bench_load import LoadShape

RATE = 100.0  # payments per second
SAMPLE_EVERY = 10.0  # seconds
WARM_UP_SHARE = 0.2  # of the run: growth is counted from the first sample after it


def rss_kib(pid: int) -> int | None:
    """The resident set size of a process in KiB (Linux), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def growth(samples: list[tuple[float, int]], warm_up: float) -> dict:
    """RSS after warm-up: first, last, max and the growth from first to last
    (KiB and KiB per minute) (pure)."""
    after = [(t, kib) for t, kib in samples if t >= warm_up]
    if len(after) < 2:
        return {"samples_after_warm_up": len(after)}
    (t0, first), (t1, last) = after[0], after[-1]
    return {"samples_after_warm_up": len(after), "first_kib": first, "last_kib": last,
            "max_kib": max(k for _, k in after), "growth_kib": last - first,
            "growth_kib_per_minute": round((last - first) / max((t1 - t0) / 60, 1e-9), 1)}


async def run_soak(reactor, *, seconds: float, report_path: Path | None, workdir: Path | None) -> dict:
    from .bench import BIN, Child, RowSpec, free_port, gateway_config, wait_for_port

    workdir = workdir or Path(tempfile.mkdtemp(prefix="billgw-soak-"))
    rowdir = workdir / "soak"
    shutil.rmtree(rowdir, ignore_errors=True)  # nothing of an earlier run counted in this one
    rowdir.mkdir(parents=True)
    spec = RowSpec("soak", "gateway", int(RATE * seconds), 10, 4, "sqlite", biller="telecom", open_loop_rate=RATE)
    children: list[Child] = []
    try:
        smsc_port, port, record = free_port(), free_port(), rowdir / "sms.jsonl"
        smsc = Child(reactor, [str(BIN / "billgw"), "smsc-sim", "--listen", f"tcp:{smsc_port}:interface=127.0.0.1",
                               "--password", "bench-pw", "--record", str(record)], rowdir, "smsc")
        children.append(smsc)
        await wait_for_port(reactor, smsc_port, smsc)
        telecom_port = free_port()
        tel = Child(reactor, [str(BIN / "billgw"), "telecom-sim", "--listen",
                              f"tcp:{telecom_port}:interface=127.0.0.1", "--db", str(rowdir / "ledger.sqlite"),
                              "--extra-subscribers", "1"], rowdir, "telecom")
        children.append(tel)
        await wait_for_port(reactor, telecom_port, tel)
        config = rowdir / "billgw.toml"
        config.write_text(gateway_config(port=port, db_url=f"sqlite:///{rowdir / 'journal.sqlite'}",
                                         smsc_port=smsc_port, biller="telecom", telecom_port=telecom_port))
        gateway = Child(reactor, [str(BIN / "billgw"), "--config", str(config), "serve"], rowdir, "gateway")
        children.append(gateway)
        await wait_for_port(reactor, port, gateway)
        shape = LoadShape(count=spec.count, concurrency=spec.concurrency, connections=spec.connections,
                          workers=1, biller="TEL", service="MOBILE", open_loop_rate=RATE)
        print(f"bench: soak, {spec.count} payments at {RATE:g}/s for {seconds:g} s; RSS every "
              f"{SAMPLE_EVERY:g} s", flush=True)
        started = time.monotonic() + bench_load.start_delay(1)
        samples: list[tuple[float, int]] = []
        done: dict = {}
        defer.ensureDeferred(bench_load.run_load(
            reactor, lambda argv, name: Child(reactor, argv, rowdir, name), str(BIN / "atm-sim"), shape, port,
            rowdir)).addBoth(lambda r: done.setdefault("result", r))
        while "result" not in done:
            await task.deferLater(reactor, SAMPLE_EVERY, lambda: None)
            kib = rss_kib(gateway.pid)
            if kib is not None:
                at = round(time.monotonic() - started, 1)
                samples.append((at, kib))
                print(f"soak: {at:7.1f} s  rss {kib / 1024:8.1f} MiB", flush=True)
        result = done["result"]
        if hasattr(result, "raiseException"):
            result.raiseException()
    finally:
        for child in reversed(children):
            await child.stop(reactor)
    summary = growth(samples, seconds * WARM_UP_SHARE)
    report = {"seconds": seconds, "rate": RATE, "approved": result.approved, "latency": result.latency,
              "samples": samples, "after_warm_up": summary}
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    if "growth_kib" in summary:
        line = (f"soak {seconds:g}s approved {result.approved} rss {summary['first_kib'] / 1024:.1f}->"
                f"{summary['last_kib'] / 1024:.1f}MiB after warm-up (growth {summary['growth_kib']} KiB, "
                f"{summary['growth_kib_per_minute']} KiB/min)")
    else:
        line = f"soak {seconds:g}s approved {result.approved}: too few samples after warm-up"
    print(f"\nbench summary: {line}", flush=True)
    return report
