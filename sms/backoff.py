"""Capped exponential back-off, shared by the SMPP rebind loop and the outbox."""


def exponential_backoff(failures: int, base: float, cap: float) -> float:
    """Delay after the ``failures``-th consecutive failure (1 → ``base``)."""
    if failures < 1:
        return 0.0
    # Bound the exponent so that a long outage cannot overflow the float.
    return min(cap, base * 2 ** min(failures - 1, 62))
