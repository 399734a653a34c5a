"""The pacer: when the next submit_sm may be written on a bind.

Two rules, both driven by the injected clock's ``seconds()``:

* a steady rate -- at most ``rate`` submits per second (the contracted TPS),
  as evenly spaced slots, so a burst of receipts never arrives at the SMSC
  as a burst;
* a pause after a temporary refusal (0x58 throttled, 0x14 queue full, ...):
  the *whole bind* waits ``pause_base`` seconds, doubling with each
  consecutive refusal up to ``pause_cap``; the first accepted submit resets
  the count.  Throttling is about the account, not the message, so retrying
  only the refused message while its neighbours go on would keep the SMSC
  refusing.

Pure state, no timers: the link asks :meth:`Pacer.delay` and schedules.
"""
from __future__ import annotations

from billgw.sms.backoff import exponential_backoff


class Pacer:
    def __init__(self, rate: float, *, pause_base: float = 1.0, pause_cap: float = 30.0):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.pause_base = pause_base
        self.pause_cap = pause_cap
        self._next_slot = 0.0
        self._paused_until = 0.0
        self.refusals = 0  # consecutive temporary refusals

    def delay(self, now: float) -> float:
        """Seconds to wait before the next submit may be written (0: now)."""
        return max(0.0, self._next_slot - now, self._paused_until - now)

    def take(self, now: float) -> None:
        """A submit is being written now: the next slot is one interval on."""
        self._next_slot = max(self._next_slot, now) + self.interval

    def refused(self, now: float) -> float:
        """A temporary refusal: pause the bind; returns the pause."""
        self.refusals += 1
        pause = exponential_backoff(self.refusals, self.pause_base, self.pause_cap)
        self._paused_until = max(self._paused_until, now + pause)
        return pause

    def accepted(self) -> None:
        self.refusals = 0
