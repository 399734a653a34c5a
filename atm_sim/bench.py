"""``atm-sim bench``: the gateway's throughput as a ratio of what the machine allows.

Every row is measured in the same run, on the same machine, with the same
load generator (this process, playing a bank switch: :mod:`.switch`, closed
loop: ``concurrency`` payments in flight, a new one as soon as one is
answered) against a server in a process of its own:

- ``baseline``: :mod:`.baseline`, a Twisted server that frames, decodes and
  encodes the same messages with the same spec and approves at once -- the
  practical ceiling of our wire in Python here;
- ``sqlite``: ``billgw serve`` with the ``instant`` biller (no biller
  latency), its durable SQLite journal and SMS outbox, receipts going to
  ``billgw smsc-sim``;
- ``postgresql``: the same on PostgreSQL, when ``BILLGW_BENCH_PG_URL`` names
  a database the bench may wipe;
- ``e2e``: the gateway with the telecom SOAP simulator and the SMSC
  simulator as separate processes;
- ``sqlite-openN``: the ``sqlite`` gateway under an open-loop load of N
  payments per second, latency counted from each 0200's intended send time.

Each row prints throughput (approved payments per second), its ratio to the
baseline at the same concurrency, 0210 latency percentiles as the switch
measured them, the server process's CPU per payment (from /proc), and the
SMS receipts the SMSC received per second from the start of the load until
the outbox was drained.  Figures are printed and written as JSON, never
asserted: the last line is ``bench summary: ...`` so runs compare at a
glance.  It talks to the servers only over the wire and only on loopback.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from twisted.internet import defer, protocol, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from .switch import SwitchPlan, run_switch

BIN = Path(sys.executable).parent
BOUND = 60.0  # seconds: any single wait of the bench (start-up, drain)
BENCH_SUBSCRIBER = "0790000000"


@dataclass(frozen=True)
class RowSpec:
    name: str
    server: str  # baseline | gateway
    count: int
    concurrency: int
    connections: int
    database: str | None = None  # "sqlite" or a PostgreSQL URL
    biller: str = "instant"  # instant | telecom
    open_loop_rate: float | None = None  # payments/s, open loop; None: closed loop


@dataclass
class RowResult:
    name: str
    concurrency: int
    connections: int
    payments: int
    approved: int
    seconds: float
    throughput: float
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    server_cpu_ms_per_payment: float | None
    load_cpu_percent: float | None = None  # the load generator's own CPU: near 100 = it is the limit
    ratio: float | None = None
    sms_received: int | None = None
    sms_per_second: float | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Child(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.ended.callback(None)


class Child:
    """A server process, its output in files of the work directory."""

    def __init__(self, reactor, argv: list[str], workdir: Path, name: str, env: dict | None = None):
        self.proto = _Child()
        out = os.open(workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.transport = reactor.spawnProcess(self.proto, argv[0], argv, env=env or dict(os.environ),
                                                  path=str(workdir), childFDs={0: "w", 1: out, 2: out})
        finally:
            os.close(out)
        self.pid = self.transport.pid

    async def stop(self, reactor) -> None:
        if not self.proto.ended.called:
            self.transport.signalProcess("TERM")
            try:
                await self.proto.ended.addTimeout(15, reactor)
            except defer.TimeoutError:
                self.transport.signalProcess("KILL")


async def wait_for_port(reactor, port: int, child: Child) -> None:
    for _ in range(int(BOUND / 0.1)):
        if child.proto.ended.called:
            raise RuntimeError(f"the server exited before listening on {port}")
        try:
            p = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1),
                                      protocol.Protocol()).addTimeout(2, reactor)
            p.transport.loseConnection()
            return
        except Exception:
            await task.deferLater(reactor, 0.1, lambda: None)
    raise RuntimeError(f"nothing listens on {port} after {BOUND} s")


def gateway_config(*, port: int, db_url: str, smsc_port: int, biller: str, telecom_port: int | None) -> str:
    """A complete configuration for one bench row (every other key: its default)."""
    if biller == "instant":
        billers = ('[billers.BENCH]\nname_en = "Benchmark Biller"\nadapter = "instant"\ntimeout = 10.0\n'
                   '[billers.BENCH.services.ANY]\nname_en = "Any Service"\ncurrency = "400"\n'
                   'currency_code = "JOD"\nexponent = 3\nmin_amount = 100\nmax_amount = 5000000\n')
    else:
        billers = (f'[billers.TEL]\nname_en = "Jordan Telecom"\nadapter = "telecom_soap"\ntimeout = 10.0\n'
                   f'[billers.TEL.settings]\nurl = "http://127.0.0.1:{telecom_port}/BillingService"\n'
                   'pool_size = 16\n'
                   '[billers.TEL.services.MOBILE]\nname_en = "Mobile"\ncurrency = "400"\n'
                   'currency_code = "JOD"\nexponent = 3\nmin_amount = 100\nmax_amount = 5000000\n')
    return (f'[gateway]\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
            f'[database]\nurl = "{db_url}"\n'
            '[logging]\nformat = "json"\nlevel = "warning"\n'
            f'[sms]\nhost = "127.0.0.1"\nport = {smsc_port}\npassword = "bench-pw"\npoll_interval = 0.5\n'
            # The simulator has no contracted rate: the drain measures the
            # sender and its database work, not the pacer's 50/s default.
            'rate = 5000.0\n'
            + billers)


def wipe_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def plan_for(spec: RowSpec) -> SwitchPlan:
    biller, service = ("BENCH", "ANY") if spec.biller == "instant" else ("TEL", "MOBILE")
    return SwitchPlan(
        count=spec.count, subscribers=(BENCH_SUBSCRIBER,), amount_min=1_000, amount_max=1_000, biller=biller,
        service=service, concurrency=spec.concurrency, connections=spec.connections,
        rate=spec.open_loop_rate or 1e9, open_loop=spec.open_loop_rate is not None,
        duplicate_rate=0.0, advice_rate=0.0, cancel_rate=0.0, arabic_rate=0.0, answer_timeout=25.0,
        connect_wait=10.0, sign_on_timeout=10.0, max_duration=600.0, first_stan=1)


async def measure(reactor, spec: RowSpec, port: int, server: Child, sms_record: Path | None) -> RowResult:
    cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
    started = time.monotonic()
    report = await run_switch(reactor, "127.0.0.1", port, plan_for(spec))
    cpu_after, own_after = cpu_seconds(server.pid), time.process_time()
    elapsed = time.monotonic() - started
    approved = report.counts["approved"]
    lat = report.latency
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    cpu = None
    if cpu_before is not None and cpu_after is not None and approved:
        cpu = round((cpu_after - cpu_before) * 1000 / approved, 3)
    result = RowResult(
        name=spec.name, concurrency=spec.concurrency, connections=spec.connections, payments=spec.count,
        approved=approved, seconds=round(report.duration, 3),
        throughput=round(approved / report.duration, 1) if report.duration else 0.0,
        p50_ms=ms(lat["p50"]), p99_ms=ms(lat["p99"]), p999_ms=ms(lat["p99.9"]), max_ms=ms(lat["max"]),
        server_cpu_ms_per_payment=cpu,
        load_cpu_percent=round(100 * (own_after - own_before) / elapsed, 1) if elapsed else None)
    if sms_record is not None:
        # Drained: the SMSC's record stops growing (bounded) once every
        # confirmed payment's receipt is in.
        last, last_change = count_lines(sms_record), time.monotonic()
        while last < approved and time.monotonic() - last_change < 10.0:
            await task.deferLater(reactor, 0.2, lambda: None)
            now = count_lines(sms_record)
            if now != last:
                last, last_change = now, time.monotonic()
        result.sms_received = last
        result.sms_per_second = round(last / (last_change - started), 1) if last else 0.0
    return result


async def run_row(reactor, spec: RowSpec, workdir: Path) -> RowResult:
    rowdir = workdir / spec.name
    rowdir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        port = free_port()
        if spec.server == "baseline":
            server = Child(reactor, [str(BIN / "atm-sim"), "baseline-server", "--listen",
                                     f"tcp:{port}:interface=127.0.0.1"], rowdir, "baseline")
            children.append(server)
            await wait_for_port(reactor, port, server)
            return await measure(reactor, spec, port, server, None)
        smsc_port, record = free_port(), rowdir / "sms.jsonl"
        smsc = Child(reactor, [str(BIN / "billgw"), "smsc-sim", "--listen", f"tcp:{smsc_port}:interface=127.0.0.1",
                               "--password", "bench-pw", "--record", str(record)], rowdir, "smsc")
        children.append(smsc)
        await wait_for_port(reactor, smsc_port, smsc)
        telecom_port = None
        if spec.biller == "telecom":
            telecom_port = free_port()
            tel = Child(reactor, [str(BIN / "billgw"), "telecom-sim", "--listen",
                                  f"tcp:{telecom_port}:interface=127.0.0.1", "--db", str(rowdir / "ledger.sqlite"),
                                  "--extra-subscribers", "1"], rowdir, "telecom")
            children.append(tel)
            await wait_for_port(reactor, telecom_port, tel)
        if spec.database == "sqlite":
            db_url = f"sqlite:///{rowdir / 'journal.sqlite'}"
        else:
            db_url = spec.database
            await threads.deferToThread(wipe_postgres, db_url)  # blocking: off the reactor
        config = rowdir / "billgw.toml"
        config.write_text(gateway_config(port=port, db_url=db_url, smsc_port=smsc_port, biller=spec.biller,
                                         telecom_port=telecom_port), encoding="utf-8")
        gateway = Child(reactor, [str(BIN / "billgw"), "--config", str(config), "serve"], rowdir, "gateway")
        children.append(gateway)
        await wait_for_port(reactor, port, gateway)
        return await measure(reactor, spec, port, gateway, record)
    finally:
        for child in reversed(children):
            await child.stop(reactor)


def rows_for(quick: bool, pg_url: str | None) -> list[RowSpec]:
    concurrency, connections = 10, 4
    scale = 1 if quick else 5
    rows = [RowSpec("baseline", "baseline", 3000 * scale, concurrency, connections),
            RowSpec("sqlite", "gateway", 600 * scale, concurrency, connections, "sqlite")]
    if pg_url:
        rows.append(RowSpec("postgresql", "gateway", 600 * scale, concurrency, connections, pg_url))
    rows.append(RowSpec("e2e", "gateway", 300 * scale, concurrency, connections, "sqlite", biller="telecom"))
    # Open loop: a constant arrival rate, latency from the intended send
    # time (the issue's target: 1,000/s with p99 <= 2 ms); the quick set
    # stays below what the gateway sustains today, so it shows latency, not
    # collapse.
    open_rate = 100.0 if quick else 1000.0
    rows.append(RowSpec(f"sqlite-open{open_rate:.0f}", "gateway", int(open_rate * 5), concurrency, connections,
                        "sqlite", open_loop_rate=open_rate))
    if not quick:
        for n in (1, 100):  # how cost grows with connections (10 above)
            rows.append(RowSpec(f"baseline-c{n}", "baseline", 3000 * scale, n, min(n, 64)))
            rows.append(RowSpec(f"sqlite-c{n}", "gateway", 600 * scale, n, min(n, 64), "sqlite"))
    return rows


def with_ratios(results: list[RowResult]) -> list[RowResult]:
    """Each row's throughput over the baseline's at the same concurrency."""
    baselines = {r.concurrency: r.throughput for r in results if r.name.startswith("baseline")}
    out = []
    for r in results:
        # An open-loop row's throughput is its arrival rate: no ratio.
        base = None if "-open" in r.name else baselines.get(r.concurrency)
        out.append(replace(r, ratio=round(r.throughput / base, 4) if base else None))
    return out


def render(results: list[RowResult]) -> str:
    header = (f"{'row':<14} {'conc':>5} {'conns':>5} {'approved':>8} {'pay/s':>9} {'ratio':>7} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} {'max ms':>8} {'cpu ms/pay':>10} {'load cpu%':>9} "
              f"{'sms/s':>7}")
    lines = [header, "-" * len(header)]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in results:
        lines.append(f"{r.name:<14} {r.concurrency:>5} {r.connections:>5} {r.approved:>8} "
                     f"{r.throughput:>9.1f} {fmt(r.ratio, '>7.3f')} {fmt(r.p50_ms, '>8.1f')} "
                     f"{fmt(r.p99_ms, '>8.1f')} {fmt(r.p999_ms, '>8.1f')} {fmt(r.max_ms, '>8.1f')} "
                     f"{fmt(r.server_cpu_ms_per_payment, '>10.3f')} {fmt(r.load_cpu_percent, '>9.1f')} "
                     f"{fmt(r.sms_per_second, '>7.1f')}")
    parts = [f"{r.name} {r.ratio:.3f}x" for r in results if r.ratio is not None and not r.name.startswith("baseline")]
    drains = [r.sms_per_second for r in results if r.name == "sqlite" and r.sms_per_second is not None]
    if drains:
        parts.append(f"sms-drain {drains[0]:.0f}/s")
    parts += [f"{r.name} p99 {r.p99_ms:.1f}ms" for r in results if "-open" in r.name and r.p99_ms is not None]
    lines.append("")
    lines.append("bench summary: " + " ".join(parts))
    return "\n".join(lines)


async def run_bench(reactor, *, quick: bool, report_path: Path | None, workdir: Path | None,
                    pg_url: str | None) -> list[RowResult]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="billgw-bench-"))
    results = []
    for spec in rows_for(quick, pg_url):
        print(f"bench: {spec.name} ({spec.count} payments, concurrency {spec.concurrency}) ...", flush=True)
        results.append(await run_row(reactor, spec, workdir))
    results = with_ratios(results)
    from .bench_sms import render_sms_drain, run_sms_drain  # the SMS rows (bench_sms.py)

    sms_drain = await run_sms_drain(reactor, workdir, quick=quick)
    print(render_sms_drain(sms_drain), flush=True)
    print(render(results), flush=True)  # its last line: the summary
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "quick": quick, "workdir": str(workdir), "rows": [asdict(r) for r in results],
            "sms_drain": [asdict(r) for r in sms_drain]}, indent=1) + "\n")
    return results


def main(argv: Sequence[str], reactor) -> int:
    """``atm-sim bench``; ``reactor`` comes from the composition root (cli.py)."""
    parser = argparse.ArgumentParser(prog="atm-sim bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the reduced set (a few minutes)")
    parser.add_argument("--report", type=Path, help="write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep the servers' files and logs here")
    args = parser.parse_args(argv)
    outcome = {}

    async def go():
        try:
            outcome["rows"] = await run_bench(reactor, quick=args.quick, report_path=args.report,
                                              workdir=args.workdir, pg_url=os.environ.get("BILLGW_BENCH_PG_URL"))
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()).addErrback(
        lambda f: outcome.setdefault("error", f)))
    reactor.run()
    if "error" in outcome:
        print(f"atm-sim bench: {outcome['error'].getErrorMessage()}", file=sys.stderr)
        return 2
    return 0
