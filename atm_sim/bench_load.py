"""The bench's load: ``atm-sim load`` in one or more processes, merged.

One Python process playing a switch spends more CPU per payment than the
baseline server does answering it, so a single generator caps the baseline
row at its own speed (it showed 91-97 % of a core).  Here the load of a row
is split over ``workers`` processes -- each its own acquirer id (F32), so
their keys never collide, each at its share of the concurrency, links and
payments -- started together at one wall-clock instant (``--start-at``).
Each writes its 0210 latencies as an HDR histogram (:mod:`.histogram`);
the bench merges them, and takes the row's throughput over the span from
the first start to the last end.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .histogram import LatencyHistogram

BENCH_ACQUIRER_BASE = 900_001  # worker i is acquirer 900001 + i
MAX_WORKERS = 32
MAX_LINKS_PER_WORKER = 64  # the switch's own bound
# Seconds for every worker to start Python and import before the common
# start: on two cores twenty processes importing Twisted take several.
START_DELAY = 3.0
START_DELAY_PER_WORKER = 0.5


def start_delay(workers: int) -> float:
    return START_DELAY + START_DELAY_PER_WORKER * workers


def acquirer_for(worker: int) -> str:
    return str(BENCH_ACQUIRER_BASE + worker)


def bench_acquirers() -> list[str]:
    """Every acquirer id a bench worker may use (the gateway's peer lists them)."""
    return [acquirer_for(i) for i in range(MAX_WORKERS)]


def split(total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` as evenly as whole numbers allow (pure)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class LoadShape:
    """What one row asks of its load, whatever the number of processes."""

    count: int
    concurrency: int
    connections: int
    workers: int
    biller: str = "BENCH"
    service: str = "ANY"
    open_loop_rate: float | None = None
    connect_wait: float = 10.0

    def __post_init__(self):
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1..{MAX_WORKERS}")
        if self.workers > min(self.count, self.concurrency, self.connections):
            raise ValueError("each worker needs at least one payment, one in flight and one link")
        if max(split(self.connections, self.workers)) > MAX_LINKS_PER_WORKER:
            raise ValueError(f"at most {MAX_LINKS_PER_WORKER} links per worker: add workers")


def worker_argv(atm_sim: str, shape: LoadShape, port: int, worker: int, histogram: Path,
                start_at: float) -> list[str]:
    """The ``atm-sim load`` command line of one worker (pure)."""
    n = shape.workers
    count = split(shape.count, n)[worker]
    concurrency = split(shape.concurrency, n)[worker]
    argv = [atm_sim, "load", "--host", "127.0.0.1", "--port", str(port), "--count", str(count),
            "--concurrency", str(concurrency), "--connections", str(split(shape.connections, n)[worker]),
            "--duplicate-rate", "0", "--advice-rate", "0", "--cancel-rate", "0",
            "--subscribers", "0790000000", "--biller", shape.biller, "--service", shape.service,
            "--amount-min", "1.000", "--amount-max", "1.000", "--acquirer", acquirer_for(worker),
            "--seed", str(worker), "--answer-timeout", "25", "--connect-wait", str(shape.connect_wait),
            "--sign-on-timeout", str(shape.connect_wait), "--max-duration", "900",
            "--histogram", str(histogram), "--start-at", f"{start_at:.3f}", "--json"]
    if shape.open_loop_rate is not None:
        argv += ["--open-loop", "--rate", f"{shape.open_loop_rate / n:g}"]
    else:
        argv += ["--rate", "1000000000"]
    return argv


@dataclass(frozen=True)
class LoadResult:
    approved: int
    sent: int
    seconds: float  # first start to last end
    latency: dict  # LatencyHistogram.summary(), seconds
    load_cpu_percent: float | None  # the generators' CPU, per process, over the span
    workers: int
    started_at: float = 0.0  # wall clock (UNIX seconds) of the first worker's start


def merge(parts: list[dict]) -> LoadResult:
    """The workers' ``--histogram`` files as one row (pure)."""
    histogram = LatencyHistogram()
    for part in parts:
        histogram.merge(LatencyHistogram.decode(part["histogram"]))
    started = min(p["started_at"] for p in parts)
    ended = max(p["ended_at"] for p in parts)
    seconds = max(ended - started, 1e-9)
    cpu = sum(p.get("cpu_seconds") or 0.0 for p in parts)
    return LoadResult(
        approved=sum(p["counts"]["approved"] for p in parts),
        sent=sum(p["counts"]["payments"] - p["counts"]["not_sent"] for p in parts),
        seconds=seconds, latency=histogram.summary(),
        load_cpu_percent=round(100 * cpu / seconds / len(parts), 1), workers=len(parts), started_at=started)


async def run_load(reactor, child_factory, atm_sim: str, shape: LoadShape, port: int, rowdir: Path) -> LoadResult:
    """Start the workers (``child_factory(argv, name)`` spawns a process and
    returns a :class:`~.bench.Child`), wait for all, merge their histograms."""
    start_at = time.time() + start_delay(shape.workers)
    paths = [rowdir / f"load-{i}.hdr.json" for i in range(shape.workers)]
    children = [child_factory(worker_argv(atm_sim, shape, port, i, paths[i], start_at), f"load-{i}")
                for i in range(shape.workers)]
    for child in children:
        await child.proto.ended
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            raise RuntimeError(f"a load worker wrote no histogram ({path.name}; see its log in {rowdir})") from None
    return merge(parts)
