"""Business dates at their edges (pure rules, the journal's cut-over rows,
and the configuration keys), every boundary at its exact second."""
import datetime as dt

import pytest

from billgw.gateway import business_day as bd
from billgw.gateway import business_journal
from billgw.gateway.config import ConfigError, load_settings, parse_settings
from billgw.gateway.schema import business_days

AMMAN = bd.BusinessCalendar("Asia/Amman")  # UTC+3 all year
# 2026-11-22T21:00:00Z = 2026-11-23 00:00:00 in Amman.
AMMAN_MIDNIGHT = 1795381200.0
D22, D23, D24 = dt.date(2026, 11, 22), dt.date(2026, 11, 23), dt.date(2026, 11, 24)


def at(local_hhmmss: str, day: dt.date = D22) -> float:
    """Clock seconds of a local Amman time of ``day``."""
    t = bd.parse_time(local_hhmmss)
    return dt.datetime.combine(day, t, bd.zone("Asia/Amman")).timestamp()


def test_the_business_date_is_the_local_date_not_the_utc_one():
    assert bd.scheduled_date(AMMAN, AMMAN_MIDNIGHT - 1) == D22
    assert bd.scheduled_date(AMMAN, AMMAN_MIDNIGHT) == D23
    # At that moment the UTC date is still the 22nd.
    assert dt.datetime.fromtimestamp(AMMAN_MIDNIGHT, dt.timezone.utc).date() == D22
    assert bd.scheduled_date(bd.BusinessCalendar("UTC"), AMMAN_MIDNIGHT) == D22


def test_a_scheduled_cut_over_moves_the_date_at_its_exact_second():
    calendar = bd.BusinessCalendar("Asia/Amman", bd.parse_time("22:00"))
    assert bd.scheduled_date(calendar, at("21:59:59")) == D22
    assert bd.scheduled_date(calendar, at("22:00:00")) == D23
    assert bd.scheduled_date(calendar, at("23:59:59")) == D23
    assert bd.scheduled_date(calendar, at("00:00:00", D23)) == D23


def test_dst_does_not_move_the_local_midnight_off_the_local_clock():
    athens = bd.BusinessCalendar("Europe/Athens")  # UTC+2 in winter, +3 in summer
    winter = dt.datetime(2026, 1, 14, 22, 0, tzinfo=dt.timezone.utc).timestamp()  # 00:00 on the 15th
    summer = dt.datetime(2026, 7, 14, 21, 0, tzinfo=dt.timezone.utc).timestamp()  # 00:00 on the 15th
    assert bd.scheduled_date(athens, winter - 1) == dt.date(2026, 1, 14)
    assert bd.scheduled_date(athens, winter) == dt.date(2026, 1, 15)
    assert bd.scheduled_date(athens, summer - 1) == dt.date(2026, 7, 14)
    assert bd.scheduled_date(athens, summer) == dt.date(2026, 7, 15)


@pytest.mark.parametrize("after", [bd.NEXT_DAY, bd.DECLINE])
def test_a_billers_cut_off_passes_at_its_exact_second(after):
    cutoff = bd.CutOff(bd.parse_time("22:00:00"), after)
    assert not bd.cutoff_passed(AMMAN, cutoff, at("21:59:59"))
    assert bd.cutoff_passed(AMMAN, cutoff, at("22:00:00"))
    assert bd.cutoff_passed(AMMAN, cutoff, at("23:59:59"))
    assert not bd.cutoff_passed(AMMAN, cutoff, at("00:00:00", D23))  # a new local day
    assert not bd.cutoff_passed(AMMAN, None, at("23:59:59"))


def test_after_the_cut_off_a_payment_books_on_the_next_business_date():
    cutoff = bd.CutOff(bd.parse_time("22:00"))
    assert bd.payment_date(AMMAN, at("21:59:59"), cutoff=cutoff) == D22
    assert bd.payment_date(AMMAN, at("22:00:00"), cutoff=cutoff) == D23
    # Once the gateway has cut over to the 23rd, the cut-off adds nothing.
    assert bd.payment_date(AMMAN, at("22:30:00"), cut_over=D23, cutoff=cutoff) == D23
    assert bd.payment_date(AMMAN, at("00:10:00", D23), cutoff=cutoff) == D23


def test_a_cut_over_ahead_of_the_schedule_wins_until_the_schedule_catches_up():
    assert bd.payment_date(AMMAN, at("20:00:00"), cut_over=D23) == D23
    assert bd.payment_date(AMMAN, at("10:00:00", D23), cut_over=D23) == D23
    assert bd.payment_date(AMMAN, at("10:00:00", D24), cut_over=D23) == D24


def test_a_peer_cut_over_opens_one_day_and_a_repeat_opens_none():
    now = at("21:00:00")
    assert bd.cut_over_date(AMMAN, now, current=D22) == D23
    assert bd.cut_over_date(AMMAN, now, current=D23) is None  # would skip to the 24th
    assert bd.cut_over_date(AMMAN, now, current=D23, requested=D23) == D23  # a repeat naming it
    assert bd.cut_over_date(AMMAN, now, current=D22, requested=D23) == D23
    assert bd.cut_over_date(AMMAN, now, current=D22, requested=D22) == D22  # nothing moves
    assert bd.cut_over_date(AMMAN, now, current=D23, requested=D22) is None  # never back
    assert bd.cut_over_date(AMMAN, now, current=D22, requested=D24) is None  # never skips
    # After local midnight the 23rd is today: its cut-over opens the 24th.
    assert bd.cut_over_date(AMMAN, at("00:05:00", D23), current=D23) == D24


def test_an_f15_mmdd_is_read_in_the_nearest_year():
    assert bd.date_of_mmdd("0101", dt.date(2026, 12, 31)) == dt.date(2027, 1, 1)
    assert bd.date_of_mmdd("1231", dt.date(2027, 1, 1)) == dt.date(2026, 12, 31)
    assert bd.date_of_mmdd("0229", dt.date(2028, 2, 28)) == dt.date(2028, 2, 29)
    assert bd.date_of_mmdd("0229", dt.date(2026, 6, 1)) is None  # no 29 February in 2025-2027


def test_times_and_zones_are_checked():
    assert bd.parse_time("07:05") == dt.time(7, 5)
    assert bd.parse_time("23:59:59") == dt.time(23, 59, 59)
    for bad in ("24:00", "7:05", "22:60", "noon", "22:00:00:00"):
        with pytest.raises(ValueError):
            bd.parse_time(bad)
    with pytest.raises(ValueError, match="IANA"):
        bd.zone("Mars/Olympus")


# --- the journal holds the business date ------------------------------------

def test_cut_overs_are_rows_every_process_reads(engine):
    with engine.begin() as conn:
        first = business_journal.record_cut_over(conn, AMMAN, at("21:00:00"), requested=None, by="switch-a")
        again = business_journal.record_cut_over(conn, AMMAN, at("21:00:05"), requested=D23, by="switch-a")
        skip = business_journal.record_cut_over(conn, AMMAN, at("21:00:10"), requested=None, by="switch-a")
    assert (first.business_date, first.moved) == (D23, True)
    assert (again.business_date, again.moved) == (D23, False)
    assert skip.business_date is None
    with engine.connect() as conn:  # another connection: another process
        assert [(r.business_date, r.opened_by) for r in conn.execute(business_days.select())] == [
            ("20261123", "switch-a")]
        assert business_journal.stamp(conn, "20261122") == "20261123"
        assert business_journal.stamp(conn, "20261124") == "20261124"
        assert business_journal.current_date(conn, AMMAN, at("21:00:00")) == D23


# --- configuration ---------------------------------------------------------

def _settings(**tables):
    data = {"billers": {"TEL": {"name_en": "T", "adapter": "instant", "services": {"M": {
        "currency": "400", "currency_code": "JOD", "exponent": 3}}}}}
    for key, value in tables.items():
        if key == "biller":
            data["billers"]["TEL"].update(value)
        else:
            data[key] = value
    return parse_settings(data, environ={})


def test_business_day_and_cut_off_keys():
    s = _settings(business_day={"timezone": "Asia/Amman", "cutover": "22:00"},
                  biller={"cutoff": "21:30:00", "after_cutoff": "decline"})
    assert s.business_day == bd.BusinessCalendar("Asia/Amman", dt.time(22, 0))
    assert s.billers["TEL"].cutoff == bd.CutOff(dt.time(21, 30), bd.DECLINE)
    assert _settings().billers["TEL"].cutoff is None
    assert _settings().business_day == bd.BusinessCalendar("UTC")
    assert load_settings(environ={}).business_day.timezone == "Asia/Amman"


@pytest.mark.parametrize("tables, key", [
    ({"business_day": {"timezone": "Asia/Nowhere"}}, "business_day.timezone"),
    ({"business_day": {"cutover": "25:00"}}, "business_day.cutover"),
    ({"business_day": {"cut_over": "22:00"}}, "business_day.cut_over"),
    ({"biller": {"cutoff": "9pm"}}, "billers.TEL.cutoff"),
    ({"biller": {"cutoff": "21:00", "after_cutoff": "tomorrow"}}, "billers.TEL.after_cutoff"),
    ({"biller": {"after_cutoff": "decline"}}, "billers.TEL.after_cutoff"),
])
def test_bad_business_day_keys_are_named(tables, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        _settings(**tables)


def test_which_peers_may_cut_over_is_a_peer_key():
    base = {"sources": ["127.0.0.1"], "acquirers": ["1"], "terminals": ["T.*"]}
    assert parse_settings({"peers": {"bank": base}}, environ={}).peers.peers[0].cut_over is True
    peer = parse_settings({"peers": {"bank": {**base, "cut_over": False}}}, environ={}).peers.peers[0]
    assert peer.cut_over is False
    with pytest.raises(ConfigError, match="^peers.bank.cut_over:"):
        parse_settings({"peers": {"bank": {**base, "cut_over": "no"}}}, environ={})
