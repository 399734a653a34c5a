"""The per-peer checks a request passes before the processor sees it,
besides sign-on and the acquirer/terminal lists: its MAC and the rate
limits (docs/security.md).  Each returns the Outcome to answer with, or
None to let the request on; each refusal is counted and logged (one line,
masked like every line) here, so the protocol stays a thin dispatcher.
"""
from __future__ import annotations

import collections

from billgw.iso8583.codes import Outcome
from billgw.iso8583.mac import MacError
from billgw.iso8583.mac import verify as mac_verify
from billgw.iso8583.messages import FINANCIAL_MTIS

from .peers import Peer
from .rate_limit import RateLimit, TokenBuckets


def mac_refusal(peer: Peer, payload: bytes, request, counters: collections.Counter, log) -> Outcome | None:
    """SECURITY_VIOLATION when the peer MACs and this request's MAC is
    missing, misplaced or wrong (the reason is logged, never a key or MAC)."""
    if peer.mac is None:
        return None
    try:
        mac_verify(payload, peer.mac)
    except MacError as exc:
        counters["mac_failure"] += 1
        log.warning("request refused: MAC check failed", reason=exc.reason, terminal=request.fields.get("41"),
                    refusals=counters["mac_failure"])
        return Outcome.SECURITY_VIOLATION
    return None


class RateBuckets:
    """Every peer's token buckets: per terminal for 0200s, one per peer for
    advices and reversals."""

    def __init__(self):
        self._buckets: dict[tuple[str, str], TokenBuckets] = {}

    def _of(self, peer: Peer, kind: str, limit: RateLimit) -> TokenBuckets:
        buckets = self._buckets.get((peer.name, kind))
        if buckets is None:
            buckets = self._buckets[(peer.name, kind)] = TokenBuckets(limit)
        return buckets

    def refusal(self, peer: Peer, request, now: float, counters: collections.Counter, log) -> Outcome | None:
        """RATE_LIMITED when the request is beyond its bucket: the terminal's
        for a 0200, the peer's advice-and-reversal bucket for a 0220/0420
        (one so answered is not acknowledged: the switch repeats it)."""
        terminal = request.fields.get("41", "")
        if request.mti in FINANCIAL_MTIS:
            limit, key, kind, counter = peer.rate_limit, terminal, "terminal", "rate_limited"
        else:
            limit, key, kind, counter = peer.advice_reversal_rate, "", "advice_reversal", \
                "advice_reversal_rate_limited"
        if limit is None or self._of(peer, kind, limit).take(key, now):
            return None
        counters[counter] += 1
        log.warning("request refused: over the rate limit", limit=kind, terminal=terminal, rate=limit.rate,
                    burst=limit.burst, refusals=counters[counter])
        return Outcome.RATE_LIMITED
