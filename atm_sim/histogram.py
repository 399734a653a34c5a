"""Latency as an HDR histogram: bounded memory, mergeable across processes.

The benchmark's load runs in several processes (one generator core is not
enough to saturate even the baseline server), so each process records its
0210 latencies in an HdrHistogram (the ``hdrhistogram`` package, the Python
port of Gil Tene's HdrHistogram), writes it encoded, and the bench merges
them: percentiles of the merged histogram are the percentiles of all the
latencies, which averaging per-process percentiles would not give.  Memory
is fixed by the range and precision (1 microsecond to 10 minutes, three
significant digits: about 0.1 % error at any value), whatever the run's
length -- a list of every latency grows with it.
"""
from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes: above any answer timeout
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


class LatencyHistogram:
    """Latencies in seconds in, percentiles in seconds out."""

    def __init__(self, hdr: HdrHistogram | None = None):
        self._hdr = hdr or HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record(self, seconds: float) -> None:
        micros = min(max(int(round(seconds * 1_000_000)), LOWEST_US), HIGHEST_US)
        self._hdr.record_value(micros)

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        self._hdr.add(other._hdr)
        return self

    @property
    def count(self) -> int:
        return self._hdr.get_total_count()

    def summary(self) -> dict[str, float | None]:
        """``count``, p50/p90/p99/p99.9 and ``max``, in seconds (None when empty)."""
        out: dict[str, float | None] = {"count": self.count}
        empty = self.count == 0
        for name, percentile in PERCENTILES:
            out[name] = None if empty else self._hdr.get_value_at_percentile(percentile) / 1_000_000
        out["max"] = None if empty else self._hdr.get_max_value() / 1_000_000
        return out

    def encode(self) -> str:
        """The compressed, base64 form HdrHistogram tools exchange."""
        return self._hdr.encode().decode("ascii")

    @classmethod
    def decode(cls, text: str) -> "LatencyHistogram":
        return cls(HdrHistogram.decode(text.encode("ascii")))

    @classmethod
    def of(cls, latencies) -> "LatencyHistogram":
        h = cls()
        for value in latencies:
            h.record(value)
        return h
