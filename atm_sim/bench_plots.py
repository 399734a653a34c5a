"""The bench's PNG plots, drawn with matplotlib next to its JSON report.

Two figures: throughput against concurrency (the scaling rows, baseline and
gateway side by side, log-log), and each row's latency percentiles
(p50, p90, p99, p99.9, max; log scale).  matplotlib is the ``bench`` extra;
without it the bench still prints and writes JSON, and says so.
"""
from __future__ import annotations

import re
from pathlib import Path

PERCENTILE_FIELDS = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms"),
                     ("max", "max_ms"))
_SCALING = re.compile(r"^(baseline|sqlite)(?:-c(\d+))?$")


def scaling_series(rows) -> dict[str, list[tuple[int, float]]]:
    """``{"baseline": [(concurrency, pay/s), ...], "sqlite": [...]}`` from
    the closed-loop rows named ``baseline``/``sqlite`` and ``-cN`` (pure)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        m = _SCALING.match(r.name)
        if m:
            series.setdefault(m.group(1), []).append((r.concurrency, r.throughput))
    return {k: sorted(v) for k, v in series.items()}


def plot(rows, stem: Path) -> list[Path]:
    """Write ``<stem>-throughput.png`` and ``<stem>-latency.png``; the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    written = []
    series = scaling_series(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        ax.plot([c for c, _ in points], [t for _, t in points], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("payments in flight (closed loop)")
    ax.set_ylabel("approved payments / s")
    ax.set_title("Throughput against concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = stem.with_name(stem.name + "-throughput.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    measured = [r for r in rows if r.p50_ms is not None]
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(measured)), 4.5))
    width = 0.8 / len(PERCENTILE_FIELDS)
    for i, (label, field) in enumerate(PERCENTILE_FIELDS):
        values = [getattr(r, field) or 0.0 for r in measured]
        ax.bar([x + i * width for x in range(len(measured))], values, width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(measured))])
    ax.set_xticklabels([r.name for r in measured], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("0210 latency, ms")
    ax.set_title("Latency percentiles per row")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(ncol=len(PERCENTILE_FIELDS), fontsize="small")
    path = stem.with_name(stem.name + "-latency.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
