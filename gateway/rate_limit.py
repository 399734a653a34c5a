"""A token bucket per key (a terminal), on time passed in.

A terminal retrying in a loop -- by fault or on purpose -- must not make the
gateway ask a biller thousands of times a minute.  Each terminal of a peer
has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request
takes one token, and with none left it is refused at once (the protocol
answers it with the ``rate_limited`` code, nothing journaled).

Memory is bounded: at most ``max_keys`` buckets are kept, least recently
used dropped first.  Dropping a bucket only forgets a terminal's debt, and
a bucket that has refilled to ``burst`` holds nothing worth remembering.

Pure: ``now`` is an argument (the protocol passes its injected clock's
``seconds()``), so tests need no clock at all.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second on average, ``burst`` at once."""

    rate: float
    burst: int

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError("rate must be greater than zero")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")


class TokenBuckets:
    def __init__(self, limit: RateLimit, max_keys: int = 10_000):
        self.limit = limit
        self.max_keys = max_keys
        # key -> (tokens, time of the last update), least recently used first
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, key: str, now: float) -> bool:
        """Take one token for ``key`` at ``now``; False when none is left."""
        limit = self.limit
        tokens, then = self._buckets.pop(key, (float(limit.burst), now))
        # A clock that went back (it should not) refills nothing.
        tokens = min(float(limit.burst), tokens + max(0.0, now - then) * limit.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
