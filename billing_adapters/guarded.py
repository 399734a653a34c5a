"""Resilience around any adapter: maintenance windows, a bulkhead and a
circuit breaker, and the adapter's lifecycle -- one wrapper per biller.

:class:`GuardedAdapter` is itself a :class:`BillerAdapter`.  Before a call
reaches the adapter it passes, in order:

1. the biller's **maintenance windows** -- inside one, "unavailable" at once;
2. the **bulkhead** -- at most ``max_concurrent`` calls to this biller at a
   time.  Beyond it the call is answered "unavailable" *at once* rather than
   queued: a queued payment would spend the switch's 30 s waiting for a
   biller that is already slow, and one slow biller must not hold the
   gateway's capacity for the others.  Nothing was sent, so nothing is
   recorded (91 for a payment; the outbox retries status queries and
   reversals later);
3. the **circuit breaker** (:mod:`.breaker`) -- open: "unavailable" at once.

Every refusal is :class:`BillerUnavailable`: the request certainly did not
reach the biller.  ``capabilities`` is honoured before all that: a biller
that answers no status queries is never asked one
(:class:`CapabilityMissing`), and one that takes no reversals gets none (a
``NOT_PERMITTED`` decline, as if it had refused: a person refunds).  The wrapper also gives every adapter the optional parts of
the contract: ``start``/``stop`` (delegated when the adapter has them,
``close`` otherwise) and ``health``.
"""
from __future__ import annotations

from typing import Any, Callable

import structlog
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.python.failure import Failure

from .breaker import BreakerSettings, BreakerState, CircuitBreaker
from .interface import (
    BillerDeclined,
    BillerHealth,
    BillerUnavailable,
    CapabilityMissing,
    DeclineReason,
    HealthState,
)
from .maintenance import MaintenanceWindow, utc, window_at

class GuardedAdapter:
    def __init__(self, adapter, *, clock, max_concurrent: int = 32,
                 breaker: BreakerSettings = BreakerSettings(),
                 maintenance: tuple[MaintenanceWindow, ...] = (), log: Any = None, name: str = ""):
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self.adapter = adapter
        self.capabilities = adapter.capabilities
        self.breaker = CircuitBreaker(clock, breaker)
        self.max_concurrent = max_concurrent
        self.maintenance = tuple(maintenance)
        self.in_flight = 0
        self.running = False
        self._clock = clock
        self._log = (log if log is not None else structlog.get_logger()).bind(guard=name or "biller")

    # --- the four calls ---------------------------------------------------------

    def inquire(self, query):
        return self._guard("inquire", lambda: self.adapter.inquire(query))

    def pay(self, order):
        return self._guard("pay", lambda: self.adapter.pay(order))

    def status(self, payment_id):
        if not self.capabilities.can_query_status:
            # Never asked: a biller without status queries must be settled
            # by its own means (a reversal, or an EXCEPTION for a person).
            return fail(CapabilityMissing("the biller answers no status queries (capabilities)"))
        return self._guard("status", lambda: self.adapter.status(payment_id))

    def reverse(self, payment_id):
        if not self.capabilities.can_reverse:
            # The biller's policy, known without asking: a person refunds.
            return fail(BillerDeclined(DeclineReason.NOT_PERMITTED, "the biller takes no reversals (capabilities)"))
        return self._guard("reverse", lambda: self.adapter.reverse(payment_id))

    def _refusal(self) -> str | None:
        """Why a call cannot go out now, or None (and then it is admitted)."""
        window = window_at(self.maintenance, utc(self._clock.seconds()))
        if window is not None:
            return f"biller in {window.reason}"
        if self.in_flight >= self.max_concurrent:
            return f"biller busy: {self.in_flight} calls in flight (max_concurrent {self.max_concurrent})"
        before = self.breaker.state
        if not self.breaker.admit():
            return f"circuit open since {self.breaker.opened_at:.0f}: biller down, retry after {self.breaker.retry_at:.0f}"
        if before is BreakerState.OPEN:
            self._log.info("biller_breaker_probing")
        return None

    def _guard(self, operation: str, call: Callable[[], Deferred]) -> Deferred:
        refusal = self._refusal()
        if refusal is not None:
            self._log.info("biller_call_refused", operation=operation, reason=refusal)
            return fail(BillerUnavailable(refusal))
        self.in_flight += 1
        inner = maybeDeferred(call)
        outer = Deferred(lambda _d: inner.cancel())

        def ended(result):
            self.in_flight -= 1
            before = self.breaker.state
            if isinstance(result, Failure) and not result.check(BillerDeclined):
                after = self.breaker.failed()  # no usable answer (a bug of ours counts: it told us nothing)
            else:
                after = self.breaker.succeeded()  # an answer, a decline included
            if after is not before:
                self._breaker_moved(before, after)
            if not outer.called:
                outer.callback(result) if not isinstance(result, Failure) else outer.errback(result)
            return None

        inner.addBoth(ended)
        return outer

    def _breaker_moved(self, before: BreakerState, after: BreakerState) -> None:
        if after is BreakerState.OPEN:
            self._log.warning("biller_breaker_open", previous=before.value,
                              retry_in=round(self.breaker.retry_at - self._clock.seconds(), 1))
        elif after is BreakerState.CLOSED:
            self._log.info("biller_breaker_closed", previous=before.value)

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> Deferred[None]:
        self.running = True
        start = getattr(self.adapter, "start", None)
        return maybeDeferred(start) if start is not None else succeed(None)

    def stop(self) -> Deferred[None]:
        self.running = False
        stop = getattr(self.adapter, "stop", None) or getattr(self.adapter, "close", None)
        return maybeDeferred(stop) if stop is not None else succeed(None)

    def close(self) -> Deferred[None]:
        return self.stop()

    def health(self) -> BillerHealth:
        if not self.running:
            return BillerHealth(HealthState.STOPPED, in_flight=self.in_flight)
        window = window_at(self.maintenance, utc(self._clock.seconds()))
        if window is not None:
            return BillerHealth(HealthState.MAINTENANCE, window.reason, self.in_flight)
        state = self.breaker.state
        if state is BreakerState.OPEN and self._clock.seconds() < self.breaker.retry_at:
            return BillerHealth(HealthState.DOWN, f"circuit open, {self.breaker.failures} failures",
                                self.in_flight)
        if state is not BreakerState.CLOSED:
            return BillerHealth(HealthState.DEGRADED, "circuit half-open: probing", self.in_flight)
        inner = getattr(self.adapter, "health", None)
        if inner is not None:
            health = inner()
            return BillerHealth(health.state, health.detail, self.in_flight)
        return BillerHealth(HealthState.UP, in_flight=self.in_flight)

    def __getattr__(self, name: str):
        # Adapter-specific extras (read_ledger, transport...) stay reachable.
        return getattr(self.adapter, name)

