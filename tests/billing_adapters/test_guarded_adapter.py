"""Resilience per biller on an injected Clock: the circuit breaker opens
after failures in a row, answers "unavailable" at once while open (nothing
reaches the biller), lets one probe through half-open and closes when it
succeeds; the bulkhead refuses beyond its limit at once; maintenance windows
refuse inside them; the lifecycle is delegated."""
from __future__ import annotations

import datetime as dt

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from billgw.billing_adapters.breaker import BreakerSettings, BreakerState
from billgw.billing_adapters.guarded import GuardedAdapter
from billgw.billing_adapters.interface import (
    BillerCapabilities,
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    DeclineReason,
    HealthState,
    PaymentStatus,
    PaymentStatusKind,
)
from billgw.billing_adapters.maintenance import MaintenanceWindow, parse_hhmm, window_at

# 2026-12-02 is a Wednesday.
WED_0800 = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.timezone.utc).timestamp()


class ScriptedBiller:
    """Each call returns the next Deferred the test controls."""

    capabilities = BillerCapabilities(can_reverse=False, can_query_status=True)

    def __init__(self):
        self.calls: list[tuple[str, defer.Deferred]] = []
        self.cancelled = 0
        self.started = self.stopped = 0

    def status(self, payment_id):
        d = defer.Deferred(lambda _: setattr(self, "cancelled", self.cancelled + 1))
        self.calls.append((payment_id, d))
        return d

    inquire = pay = reverse = status

    def answer(self, index=-1, kind=PaymentStatusKind.POSTED):
        pid, d = self.calls[index]
        d.callback(PaymentStatus(pid, kind))

    def fail(self, error, index=-1):
        self.calls[index][1].errback(error)

    def start(self):
        self.started += 1
        return defer.succeed(None)

    def stop(self):
        self.stopped += 1
        return defer.succeed(None)


def outcome(d):
    box = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def make(clock=None, **kwargs):
    clock = clock or Clock()
    if clock.seconds() == 0:
        clock.advance(WED_0800)
    biller = ScriptedBiller()
    kwargs.setdefault("breaker", BreakerSettings(failure_threshold=3, open_seconds=10, max_open_seconds=40))
    return clock, biller, GuardedAdapter(biller, clock=clock, **kwargs)


def fail_calls(guard, biller, n, error=None):
    for i in range(n):
        d = guard.status(f"P{i}")
        biller.fail(error or BillerOutcomeUnknown("dropped"))
        assert outcome(d).check(BillerOutcomeUnknown, BillerUnavailable)


# --- the breaker -------------------------------------------------------------------

def test_breaker_opens_after_failures_in_a_row_and_refuses_without_calling():
    clock, biller, guard = make()
    guard.start()
    fail_calls(guard, biller, 2)
    assert guard.breaker.state is BreakerState.CLOSED
    fail_calls(guard, biller, 1, BillerUnavailable("refused"))
    assert guard.breaker.state is BreakerState.OPEN
    assert guard.health().state is HealthState.DOWN
    calls_before = len(biller.calls)
    refused = outcome(guard.pay(object()))
    assert refused.check(BillerUnavailable) and "circuit open" in str(refused.value)
    assert len(biller.calls) == calls_before  # nothing reached the biller


def test_declines_and_answers_are_successes_that_reset_the_count():
    clock, biller, guard = make()
    fail_calls(guard, biller, 2)
    d = guard.pay(object())
    biller.fail(BillerDeclined(DeclineReason.INVALID_AMOUNT))
    assert outcome(d).check(BillerDeclined)
    fail_calls(guard, biller, 2)
    assert guard.breaker.state is BreakerState.CLOSED


def test_timeouts_count_as_failures_and_cancel_the_call():
    clock, biller, guard = make()
    for i in range(3):
        d = guard.status(f"P{i}")
        d.addTimeout(5, clock)
        clock.advance(5)
        assert outcome(d).check(defer.TimeoutError)
    assert biller.cancelled == 3
    assert guard.in_flight == 0
    assert guard.breaker.state is BreakerState.OPEN


def test_half_open_lets_one_probe_through_and_closes_on_success():
    clock, biller, guard = make()
    guard.start()
    fail_calls(guard, biller, 3)
    clock.advance(9.9)
    assert outcome(guard.status("early")).check(BillerUnavailable)
    clock.advance(0.1)
    probe = guard.status("probe")
    assert biller.calls[-1][0] == "probe"
    # While the probe is out, the others are still refused at once.
    assert outcome(guard.status("other")).check(BillerUnavailable)
    assert guard.health().state is HealthState.DEGRADED
    biller.answer()
    assert outcome(probe).status is PaymentStatusKind.POSTED
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.health().state is HealthState.UP
    d = guard.status("after")
    assert biller.calls[-1][0] == "after"
    biller.answer()
    outcome(d)


def test_failed_probe_reopens_for_longer_up_to_the_cap():
    clock, biller, guard = make()
    fail_calls(guard, biller, 3)
    for open_for in (20, 40, 40):
        clock.advance(guard.breaker.retry_at - clock.seconds())
        probe = guard.status("probe")
        biller.fail(BillerOutcomeUnknown("still down"))
        outcome(probe)
        assert guard.breaker.state is BreakerState.OPEN
        assert guard.breaker.retry_at - clock.seconds() == open_for
    clock.advance(40)
    probe = guard.status("probe")
    biller.answer()
    outcome(probe)
    assert guard.breaker.state is BreakerState.CLOSED
    # Closed again: the next opening waits the base time again.
    fail_calls(guard, biller, 3)
    assert guard.breaker.retry_at - clock.seconds() == 10


def test_breaker_can_be_disabled():
    clock, biller, guard = make(breaker=BreakerSettings(enabled=False))
    fail_calls(guard, biller, 10)
    d = guard.status("still")
    assert biller.calls[-1][0] == "still"
    biller.answer()
    outcome(d)


# --- the bulkhead ------------------------------------------------------------------

def test_bulkhead_refuses_at_once_beyond_its_limit_and_frees_slots():
    clock, biller, guard = make(max_concurrent=2)
    first, second = guard.pay(object()), guard.pay(object())
    third = outcome(guard.pay(object()))
    assert third.check(BillerUnavailable) and "max_concurrent 2" in str(third.value)
    assert len(biller.calls) == 2
    assert guard.breaker.state is BreakerState.CLOSED  # refusing is not the biller failing
    biller.answer(0)
    outcome(first)
    fourth = guard.pay(object())
    assert len(biller.calls) == 3 and guard.in_flight == 2
    biller.answer(1), biller.answer(2)
    outcome(second), outcome(fourth)
    assert guard.in_flight == 0


# --- maintenance windows ---------------------------------------------------------------

def test_maintenance_window_refuses_inside_and_lets_through_outside():
    clock, biller, guard = make(maintenance=(MaintenanceWindow.parse("08:00", "08:30", days=["wed"]),))
    guard.start()
    refused = outcome(guard.status("P"))
    assert refused.check(BillerUnavailable) and "08:00-08:30" in str(refused.value)
    assert guard.health().state is HealthState.MAINTENANCE
    assert biller.calls == []
    clock.advance(30 * 60)
    d = guard.status("P")
    biller.answer()
    assert outcome(d).status is PaymentStatusKind.POSTED


@pytest.mark.parametrize("when,covered", [
    (dt.datetime(2026, 12, 5, 23, 30), True),   # Saturday evening: starts on Saturday
    (dt.datetime(2026, 12, 6, 0, 59), True),    # Sunday morning: the Saturday window goes on
    (dt.datetime(2026, 12, 6, 1, 0), False),    # its end is exclusive
    (dt.datetime(2026, 12, 6, 23, 30), False),  # Sunday evening: no window starts on Sunday
    (dt.datetime(2026, 12, 5, 22, 59), False),
])
def test_window_past_midnight_belongs_to_the_day_it_starts(when, covered):
    window = MaintenanceWindow.parse("23:00", "01:00", days=["sat"])
    assert window.covers(when.replace(tzinfo=dt.timezone.utc)) is covered
    assert (window_at([window], when) is window) is covered


@pytest.mark.parametrize("start,end,days,problem", [
    ("24:00", "01:00", (), "HH:MM"), ("2:00", "03:00", (), "HH:MM"), ("02:00", "02:00", (), "same time"),
    ("02:00", "03:00", ("wednesday",), "days"),
])
def test_bad_windows_are_refused(start, end, days, problem):
    with pytest.raises(ValueError, match=problem):
        MaintenanceWindow.parse(start, end, days=days)
    assert parse_hhmm("00:00") == 0 and parse_hhmm("23:59") == 1439


# --- lifecycle ---------------------------------------------------------------------------

def test_lifecycle_is_delegated_and_health_reports_stopped():
    clock, biller, guard = make()
    assert guard.health().state is HealthState.STOPPED
    outcome(guard.start())
    assert biller.started == 1 and guard.health().state is HealthState.UP
    outcome(guard.stop())
    assert biller.stopped == 1 and guard.health().state is HealthState.STOPPED
    assert guard.capabilities.can_reverse is False  # the adapter's own, unchanged
