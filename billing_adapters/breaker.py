"""A circuit breaker per biller, on an injected clock.

While a biller is down every call to it would wait out the full timeout and
end IN_DOUBT or 91 anyway; the breaker answers "biller unavailable" at once
instead, which costs the switch nothing and records nothing.

- CLOSED: calls go through; ``failure_threshold`` failures in a row open it.
- OPEN: every call is refused at once, for ``open_seconds`` (doubled after
  each failed probe, up to ``max_open_seconds``).
- HALF_OPEN: the next call goes through as the probe (one at a time; the
  others are refused); its success closes the breaker, its failure opens it
  again.

A *failure* is a call that got no usable answer: the biller could not be
reached, the outcome is unknown, or the call ran out of time.  A decline is
an answer -- the biller is up -- and counts as a success.  The probe is a
real call (the next payment, inquiry or status query), which is safe because
every outcome of a call is classified for the money anyway.

Pure state and arithmetic; the clock only reads the time.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    enabled: bool = True
    failure_threshold: int = 5
    open_seconds: float = 30.0
    max_open_seconds: float = 300.0

    def __post_init__(self):
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {self.failure_threshold}")
        if not 0 < self.open_seconds <= self.max_open_seconds:
            raise ValueError("open_seconds must be positive and at most max_open_seconds")


class CircuitBreaker:
    def __init__(self, clock, settings: BreakerSettings = BreakerSettings()):
        self._clock = clock
        self.settings = settings
        self.state = BreakerState.CLOSED
        self.failures = 0  # in a row, while CLOSED
        self.opened_at: float | None = None
        self._open_for = settings.open_seconds
        self._probing = False

    @property
    def retry_at(self) -> float | None:
        """When an OPEN breaker lets its probe through."""
        return None if self.opened_at is None else self.opened_at + self._open_for

    def admit(self) -> bool:
        """May a call go through now?  True commits the caller to report
        its end with :meth:`succeeded` or :meth:`failed`."""
        if not self.settings.enabled or self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock.seconds() < self.retry_at:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def succeeded(self) -> BreakerState:
        """A call got an answer (a decline counts).  Returns the new state."""
        if self.state is BreakerState.HALF_OPEN and self._probing:
            self._close()
        elif self.state is BreakerState.CLOSED:
            self.failures = 0
        return self.state

    def failed(self) -> BreakerState:
        """A call got no usable answer.  Returns the new state."""
        if not self.settings.enabled:
            return self.state
        if self.state is BreakerState.HALF_OPEN and self._probing:
            self._open(longer=True)
        elif self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.settings.failure_threshold:
                self._open(longer=False)
        return self.state

    def _open(self, *, longer: bool) -> None:
        if longer:
            self._open_for = min(self._open_for * 2, self.settings.max_open_seconds)
        self.state = BreakerState.OPEN
        self.opened_at = self._clock.seconds()
        self._probing = False

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = None
        self._open_for = self.settings.open_seconds
        self._probing = False
