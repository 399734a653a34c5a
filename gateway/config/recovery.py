"""``[recovery]``: how the gateway settles what a crash or a silent biller left open.

Its timers are checked against the slowest biller's timeout, so a payment
still in flight is never taken for abandoned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from .reader import ConfigError, _positive, _Section

if TYPE_CHECKING:
    from .billers import BillerSettings


@dataclass(frozen=True)
class RecoverySettings:
    poll_interval: float = 1.0
    batch_size: int = 20
    lease_seconds: float = 60.0
    retry_base: float = 2.0
    retry_cap: float = 300.0
    stale_after: float = 40.0
    status_delay: float = 30.0
    expire_after: float = 86400.0
    # Contract v2: polls of an ACCEPTED payment for its biller's batch.
    accepted_poll_delay: float = 60.0
    accepted_expire_after: float = 3 * 86400.0
    # billgw audit flags a payment ACCEPTED for longer than this.
    accepted_alert_after: float = 26 * 3600.0


def _recovery(s: _Section, billers: Mapping[str, "BillerSettings"]) -> RecoverySettings:
    d = RecoverySettings()
    values = {name: s.get(name, type(getattr(d, name)), getattr(d, name), check=_positive)
              for name in ("poll_interval", "batch_size", "lease_seconds", "retry_base", "retry_cap",
                           "stale_after", "status_delay", "expire_after", "accepted_poll_delay",
                           "accepted_expire_after", "accepted_alert_after")}
    slowest = max((b.timeout for b in billers.values()), default=0.0)
    if values["stale_after"] <= slowest + 5:
        raise ConfigError(f"{s.path}.stale_after: must exceed the slowest biller timeout ({slowest} s) by "
                          "more than 5 s, or payments still in flight would be taken for abandoned")
    if values["lease_seconds"] <= slowest:
        raise ConfigError(f"{s.path}.lease_seconds: must exceed the slowest biller timeout ({slowest} s)")
    s.done()
    return RecoverySettings(**values)
