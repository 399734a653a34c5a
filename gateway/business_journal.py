"""The business dates the journal holds: cut-overs and each payment's date.

The business date is a property of the journal, not of a process: a
payment's is stamped on its row when it is journaled (:func:`stamp`, inside
the transaction that inserts it), and a cut-over (0800, F70 = 201) is a row
of ``business_days`` (:func:`record_cut_over`), which every gateway process
sharing the database reads at its next payment.  The rules that pick the
dates are pure (:mod:`.business_day`); these functions only read and write.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection

from . import business_day
from .journal import utc
from .schema import business_days

_LATEST = select(func.max(business_days.c.business_date))
# Cut-overs of several processes are serialised on PostgreSQL (SQLite's
# writers are serialised by BEGIN IMMEDIATE already).
_CUT_OVER_LOCK = text("SELECT pg_advisory_xact_lock(8583201)")


def latest_cut_over(conn: Connection) -> _dt.date | None:
    """The business date the last cut-over opened (None: never cut over)."""
    value = conn.execute(_LATEST).scalar()
    return business_day.from_text(value) if value else None


def stamp(conn: Connection, floor: str | None) -> str | None:
    """A payment's business date: ``floor`` (the schedule's and the biller's
    cut-off's, YYYYMMDD) raised to the last cut-over's."""
    if floor is None:
        return None
    latest = latest_cut_over(conn)
    return max(floor, business_day.as_text(latest)) if latest else floor


@dataclass(frozen=True)
class CutOver:
    business_date: _dt.date | None  # the date now open; None: refused
    moved: bool  # a new business date was opened (False: a repeat, or refused)


def record_cut_over(conn: Connection, calendar: business_day.BusinessCalendar, now: float, *,
                    requested: _dt.date | None, by: str) -> CutOver:
    """Open the next business date for every process (a peer's 0800 201).

    The current date is the schedule's or the last cut-over's, whichever is
    later; :func:`business_day.cut_over_date` says which date the cut-over
    opens (None: it would skip days or go back -- refused)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_CUT_OVER_LOCK)
    current = business_day.payment_date(calendar, now, cut_over=latest_cut_over(conn))
    target = business_day.cut_over_date(calendar, now, current=current, requested=requested)
    if target is None:
        return CutOver(None, False)
    if target == current:
        return CutOver(current, False)
    conn.execute(insert(business_days).values(business_date=business_day.as_text(target), opened_at=utc(now),
                                              opened_by=by[:64]))
    return CutOver(target, True)


def current_date(conn: Connection, calendar: business_day.BusinessCalendar, now: float) -> _dt.date:
    """The gateway's business date now (schedule or last cut-over)."""
    return business_day.payment_date(calendar, now, cut_over=latest_cut_over(conn))
