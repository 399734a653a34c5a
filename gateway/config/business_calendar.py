"""``[business_day]`` (timezone, daily cut-over) and a biller's ``cutoff``.

The values only: what they mean for a payment's date is
:mod:`billgw.gateway.business_day`.
"""
from __future__ import annotations

from ..business_day import AFTER_CUTOFF, NEXT_DAY, BusinessCalendar, CutOff, parse_time, zone
from .reader import ConfigError, _one_of, _Section


def _time_of_day(value: str) -> str | None:
    try:
        parse_time(value)
    except ValueError as exc:
        return str(exc)
    return None


def _cutoff(s: _Section) -> CutOff | None:
    """``cutoff = "HH:MM[:SS]"`` (local, the business day's timezone) and
    ``after_cutoff`` (next_day | decline) of a biller."""
    text = s.get("cutoff", str, "", check=lambda v: None if v == "" else _time_of_day(v))
    after = s.get("after_cutoff", str, NEXT_DAY, check=_one_of(*AFTER_CUTOFF))
    if not text:
        if "after_cutoff" in s.data:
            raise ConfigError(f"{s._key('after_cutoff')}: only with cutoff")
        return None
    return CutOff(parse_time(text), after)


def _business_day(s: _Section) -> BusinessCalendar:
    """``[business_day]``: timezone (IANA) and the daily cut-over time."""
    def known_zone(value):
        try:
            zone(value)
        except ValueError as exc:
            return str(exc)
        return None

    out = BusinessCalendar(timezone=s.get("timezone", str, "UTC", check=known_zone),
                           cutover=parse_time(s.get("cutover", str, "00:00", check=_time_of_day)))
    s.done()
    return out
