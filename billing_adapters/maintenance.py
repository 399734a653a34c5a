"""Maintenance windows: the times a biller announces it is offline.

Billers take their systems down on a schedule (a nightly batch, a weekly
upgrade).  A call inside a window would fail or hang; the gateway answers
"biller unavailable" at once instead, sends nothing, and the biller outbox
retries status queries and reversals after the window.

A window is a daily (or weekday-only) span of UTC time; it may run past
midnight (``start = "23:30"``, ``end = "00:30"``), and then belongs to the
day it starts on.  Pure functions, ``now`` passed in.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_hhmm(text: str) -> int:
    """``"02:30"`` -> minutes after midnight; ValueError otherwise."""
    match = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"must be a time of day HH:MM (UTC), not {text!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


@dataclass(frozen=True)
class MaintenanceWindow:
    start: int  # minutes after midnight, UTC
    end: int  # minutes after midnight, UTC; <= start: the window runs past midnight
    days: frozenset[int] = frozenset(range(7))  # weekdays it starts on, Monday = 0
    reason: str = "maintenance window"

    @classmethod
    def parse(cls, start: str, end: str, days=(), reason: str = "") -> "MaintenanceWindow":
        """From configuration text; ValueError naming the faulty part."""
        begin, finish = parse_hhmm(start), parse_hhmm(end)
        if begin == finish:
            raise ValueError("start and end are the same time: the window would be empty")
        numbers = set()
        for day in days:
            if day not in WEEKDAYS:
                raise ValueError(f"days: {day!r} is not one of {', '.join(WEEKDAYS)}")
            numbers.add(WEEKDAYS.index(day))
        return cls(begin, finish, frozenset(numbers) if numbers else frozenset(range(7)),
                   reason or f"maintenance window {start}-{end} UTC")

    def covers(self, now: _dt.datetime) -> bool:
        """Is ``now`` (aware, or naive UTC) inside the window?"""
        if now.tzinfo is not None:
            now = now.astimezone(_dt.timezone.utc)
        minute = now.hour * 60 + now.minute
        today = now.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        # Past midnight: the evening part today, or the morning part of a window begun yesterday.
        return (today in self.days and minute >= self.start) or \
            ((today - 1) % 7 in self.days and minute < self.end)


def window_at(windows, now: _dt.datetime) -> MaintenanceWindow | None:
    """The first window covering ``now``, or None."""
    return next((w for w in windows if w.covers(now)), None)


def utc(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
