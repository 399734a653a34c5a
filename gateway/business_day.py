"""Business dates: which day's settlement a payment belongs to (pure).

A payment's business date is decided once, when it is journaled, and kept
on its row (``transactions.business_date``): the settlement of a biller's
day, a reconciliation, a late reversal and every gateway process sharing
the database read it from there, never from one process's memory.

It is the latest of three dates (:func:`payment_date`):

- the **scheduled** date (:func:`scheduled_date`): the calendar date in the
  operator's timezone (``[business_day] timezone``, zoneinfo -- not UTC),
  moved to the next day from the daily ``cutover`` time on;
- the date the **last cut-over** opened (an 0800 with F70 = 201 from a
  peer, journaled in ``business_days``): a switch that closes its day early
  takes the gateway with it; the schedule then catches up;
- the **biller's cut-off** (:class:`CutOff`): from its time of day on, the
  biller books the day's payments on the next business date -- or, by
  configuration, refuses them (``cutoff_passed``) until the local day ends.

Every boundary is inclusive of its exact second: at ``22:00:00`` a 22:00
cut-off has passed; at ``21:59:59`` it has not.  ``now`` is passed in
(clock seconds), so each rule is tested at its edges without waiting.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NEXT_DAY = "next_day"  # after the cut-off: book on the next business date
DECLINE = "decline"  # after the cut-off: refuse until the local day ends
AFTER_CUTOFF = (NEXT_DAY, DECLINE)

MIDNIGHT = _dt.time(0, 0, 0)
ONE_DAY = _dt.timedelta(days=1)


def parse_time(text: str) -> _dt.time:
    """``HH:MM`` or ``HH:MM:SS`` (24 h); ValueError otherwise."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not HH:MM or HH:MM:SS")
    try:
        return _dt.time(*(int(p) for p in parts))
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day") from None


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (``Asia/Amman``); ValueError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA timezone such as \"Asia/Amman\"") from None


@dataclass(frozen=True)
class BusinessCalendar:
    """The gateway's business day: its timezone and daily cut-over time
    (midnight: the business date is the local calendar date)."""

    timezone: str = "UTC"
    cutover: _dt.time = MIDNIGHT

    def local(self, now: float) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(now, zone(self.timezone))


@dataclass(frozen=True)
class CutOff:
    """A biller's daily cut-off: from ``time`` (local) to the end of the
    local day its payments go to the next business date, or are declined."""

    time: _dt.time
    after: str = NEXT_DAY


def scheduled_date(calendar: BusinessCalendar, now: float) -> _dt.date:
    """The business date by the schedule alone: the local date, or the next
    one from the daily cut-over time on."""
    local = calendar.local(now)
    if calendar.cutover != MIDNIGHT and local.time() >= calendar.cutover:
        return local.date() + ONE_DAY
    return local.date()


def cutoff_passed(calendar: BusinessCalendar, cutoff: CutOff | None, now: float) -> bool:
    """The biller's cut-off time of the local day has come (inclusive)."""
    return cutoff is not None and calendar.local(now).time() >= cutoff.time


def payment_date(calendar: BusinessCalendar, now: float, *, cut_over: _dt.date | None = None,
                 cutoff: CutOff | None = None) -> _dt.date:
    """The business date of a payment made ``now``: the latest of the
    schedule's, the last cut-over's (``cut_over``, from the journal) and,
    past the biller's cut-off, the local date's next day."""
    dates = [scheduled_date(calendar, now)]
    if cut_over is not None:
        dates.append(cut_over)
    if cutoff_passed(calendar, cutoff, now):
        dates.append(calendar.local(now).date() + ONE_DAY)
    return max(dates)


def cut_over_date(calendar: BusinessCalendar, now: float, *, current: _dt.date,
                  requested: _dt.date | None = None) -> _dt.date | None:
    """The business date a peer's cut-over (0800, F70 = 201) opens, or None
    when it cannot be honoured.

    Without a date (no F15) it is the day after the current one; with one it
    is that date.  Either must be the current date (a repeat: nothing moves)
    or later, and at most the day after the local date -- a cut-over closes
    today, it cannot skip days -- so a 201 sent twice opens one day only."""
    target = requested if requested is not None else current + ONE_DAY
    latest = max(current, calendar.local(now).date() + ONE_DAY)
    if target < current or target > latest:
        return None
    return target


def date_of_mmdd(mmdd: str, around: _dt.date) -> _dt.date | None:
    """The date an MMDD (F15) names, in the year that puts it nearest
    ``around`` (December's MMDD read in January is last year's); None when
    no such day exists (0229 outside a leap year)."""
    month, day = int(mmdd[:2]), int(mmdd[2:])
    best = None
    for year in (around.year - 1, around.year, around.year + 1):
        try:
            candidate = _dt.date(year, month, day)
        except ValueError:
            continue
        if best is None or abs(candidate - around) < abs(best - around):
            best = candidate
    return best


def as_text(day: _dt.date) -> str:
    """The journal's form: YYYYMMDD."""
    return day.strftime("%Y%m%d")


def from_text(text: str) -> _dt.date:
    return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def f15(text: str) -> str:
    """The MMDD of a journaled business date (F15)."""
    return text[4:8]
