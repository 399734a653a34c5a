"""The audit's ACCEPTED rules on plain rows, and ``billgw audit`` reading a
water biller's intake table through its adapter kind."""
from __future__ import annotations

import io

from sqlalchemy import insert

from billgw.billing_adapters.interface import LedgerEntry
from billgw.billing_adapters.water.sim import WaterBillerSim
from billgw.gateway.audit import (
    ACCEPTED_BOOKED,
    ACCEPTED_MISSING_AT_BILLER,
    ACCEPTED_TOO_LONG,
    CONFIRMED_NOT_BOOKED,
    UNRESOLVED,
    BillerOutboxRow,
    JournalRow,
    audit,
    run_command,
)
from billgw.gateway.demo import settings_with_water

NOW = 1_800_000_000.0
HOUR = 3600.0


def row(pid, state, updated_at=NOW - 60):
    return JournalRow(pid, "payment", state, 15_750, "WTR", updated_at=updated_at, stan=pid.rjust(6, "0"))


def entry(pid, *, pending=False, rejected=False, reversed_=False):
    return LedgerEntry(pid, "3000000001", "WB1", 15_750, "WR1", reversed_, "t", pending=pending, rejected=rejected)


def categories(report):
    return sorted((f.category, f.payment_id) for f in report.findings)


def notes(report):
    return sorted((f.category, f.payment_id) for f in report.notes)


def test_accepted_in_the_intake_is_consistent_and_its_poll_is_not_unresolved():
    report = audit([row("a", "ACCEPTED")], {"WTR": [entry("a", pending=True)]}, [], [],
                   [BillerOutboxRow(1, "a", "STATUS", "PENDING", 3)], now=NOW, accepted_limit=26 * HOUR)
    assert report.findings == () and report.exit_status == 0
    assert UNRESOLVED not in {f.category for f in report.findings}


def test_accepted_without_a_live_intake_row_is_missing_at_the_biller():
    report = audit([row("a", "ACCEPTED"), row("b", "ACCEPTED")], {"WTR": [entry("b", rejected=True)]}, [], [], [],
                   now=NOW, accepted_limit=26 * HOUR)
    assert categories(report) == [(ACCEPTED_MISSING_AT_BILLER, "a"), (ACCEPTED_MISSING_AT_BILLER, "b")]


def test_accepted_longer_than_the_limit_is_flagged_even_without_a_ledger():
    report = audit([row("old", "ACCEPTED", NOW - 30 * HOUR), row("new", "ACCEPTED", NOW - HOUR)], {}, [], [], [],
                   now=NOW, accepted_limit=26 * HOUR)
    assert categories(report) == [(ACCEPTED_TOO_LONG, "old")]
    assert report.exit_status == 1


def test_confirmed_but_not_booked_and_accepted_already_booked():
    report = audit([row("c", "CONFIRMED"), row("d", "ACCEPTED")],
                   {"WTR": [entry("c", pending=True), entry("d")]}, [], [], [], now=NOW, accepted_limit=26 * HOUR)
    assert categories(report) == [(CONFIRMED_NOT_BOOKED, "c")]
    assert (ACCEPTED_BOOKED, "d") in notes(report)


def test_a_rejected_row_does_not_hold_a_confirmed_payment():
    report = audit([row("c", "CONFIRMED")], {"WTR": [entry("c", rejected=True)]}, [], [], [])
    assert [f.category for f in report.findings] == ["confirmed_missing_at_biller"]


def test_billgw_audit_reads_the_water_intake_table(tmp_path, engine, db_url):
    water_url = f"sqlite:///{tmp_path / 'water.sqlite'}"
    sim = WaterBillerSim(water_url)
    sim.create()
    with sim.engine.begin() as conn:
        conn.execute(insert(sim.tables.intake).values(
            GW_PAY_REF="p1", ACCT_NO="3000000001", BILL_NO="WB3000000001-11", PAY_AMT_FILS=15_750,
            PAY_TS="2026-12-06T08:00:00Z", PROC_STAT="N"))
    sim.close()
    settings = settings_with_water(None, water_url, environ={})
    import dataclasses

    settings = dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=db_url))
    out, err = io.StringIO(), io.StringIO()
    status = run_command(settings, [f"WTR={water_url}"], out=out, err=err)
    assert err.getvalue() == ""
    # The intake holds a payment the journal never saw: named, exit 1.
    assert status == 1 and "unknown_posting" in out.getvalue() and "p1" in out.getvalue()
