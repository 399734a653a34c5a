"""A 0200, its 0420 and its 0220 journaled at the same moment by two
database connections -- two threads of one gateway, or two gateway
processes sharing one PostgreSQL.

The three live in two tables that no UNIQUE key spans, so without a lock
on the acquirer keys each transaction, under READ COMMITTED, misses the
other's uncommitted row: the reversal is recorded NOT_FOUND and
acknowledged while the original goes on to be posted (seen 20 of 20 times
by an independent switch on PostgreSQL).  Each test here holds the first
writer's transaction open, starts the second on another connection in a
thread, and only commits the first once the second is seen waiting (on
PostgreSQL, in ``pg_stat_activity``) or has finished.  Without the lock the
second finishes at once, blind, and the final assertions fail; with it the
second waits and then sees the first.  SQLite serialises writers by itself
(``BEGIN IMMEDIATE``), so there the tests pin that this stays so.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from billgw.gateway import settle
from billgw.gateway.db import run_sync
from billgw.gateway.journal import NewTransaction, find_by_keys
from billgw.gateway.schema import reversals, transactions

NOW = 1795375800.0
KEYS = dict(acquirer_id="123456", terminal_id="ATM00001", stan="000123", transmission_dt="1122193000")
WAIT_BOUND = 30.0  # seconds; only reached when something is broken


def new_payment(txn_id="p1", amount=12500, local_problem=None) -> NewTransaction:
    return NewTransaction(
        id=txn_id, kind="payment", mti="0200", processing_code="500000", forwarder_id=None, rrn="632619000123",
        fingerprint="f" * 64, masked_pan="476173******0010", amount=amount, currency="400", fee=0,
        biller_code="TEL", service_code="MOBILE", billing_number="0791234567", bill_number=None,
        msisdn=None, language="en", local_problem=local_problem, **KEYS)


REVERSAL = settle.ReversalInput(
    orig_mti="0200", orig_acquirer_id=KEYS["acquirer_id"], orig_terminal_id=KEYS["terminal_id"],
    orig_stan=KEYS["stan"], orig_transmission_dt=KEYS["transmission_dt"], stan="000500",
    transmission_dt="1122193100", amount=12500, currency="400")
CTX = settle.SettleContext(can_reverse=lambda code: True, sms_text=lambda view, kind: None)
DECLINED_12 = ("0210", {"39": "12"})
ADVICE_0230 = ("0230", {"39": "00"})


def _advice(conn, new):
    return settle.record_advice(conn, new, NOW + 1, CTX, respond=lambda code: ("0230", {"39": code}),
                                ok_code="00", mismatch_code="94")


def _request(conn, new):
    return settle.record_request(conn, new, NOW + 1, CTX, DECLINED_12)


def _reversal(conn):
    return settle.record_reversal(conn, REVERSAL, NOW + 1, CTX, ack_code="00")


class Second(threading.Thread):
    """The second writer, on its own connection and transaction."""

    def __init__(self, engine, fn, *args):
        super().__init__(daemon=True)
        self.engine, self.fn, self.args = engine, fn, args
        self.result = self.error = None
        self.backend_pid = None

    def run(self):
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    self.backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
                self.result = self.fn(conn, *self.args)
        except Exception as exc:  # handed to the test thread
            self.error = exc


def wait_blocked_or_done(engine, second: Second) -> None:
    """Return once ``second`` is waiting for a lock or has finished (it must
    not be allowed to run after the first commits, or the test proves
    nothing).  PostgreSQL shows the wait; SQLite's busy wait is invisible,
    so there a short join stands in (the outcome does not depend on it)."""
    if engine.dialect.name != "postgresql":
        second.join(0.3)
        return
    probe = threading.Event()
    with engine.connect() as conn:
        for _ in range(int(WAIT_BOUND / 0.01)):
            if not second.is_alive():
                return
            if second.backend_pid is not None and conn.execute(text(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": second.backend_pid}).scalar():
                return
            probe.wait(0.01)
    raise AssertionError("the second writer neither finished nor waited")


def race(engine, first, second_fn, *second_args):
    """Run ``first`` in an open transaction, start the second writer, let
    it block (or finish), then commit the first; return both results."""
    conn = engine.connect()
    try:
        tx = conn.begin()
        first_result = first(conn)
        second = Second(engine, second_fn, *second_args)
        second.start()
        wait_blocked_or_done(engine, second)
        tx.commit()
    finally:
        conn.close()
    second.join(WAIT_BOUND)
    assert not second.is_alive(), "the second writer never finished"
    if second.error is not None:
        raise second.error
    return first_result, second.result


def rows(engine):
    with engine.connect() as conn:
        return (conn.execute(select(transactions)).all(), conn.execute(select(reversals)).all())


def test_reversal_during_the_journaling_of_its_original_sees_it(engine):
    (recorded, reversed_first), outcome = race(engine, lambda c: _request(c, new_payment()), _reversal)
    assert recorded.is_new and not reversed_first
    assert (outcome.transaction_id, outcome.state, outcome.response_code) == ("p1", settle.REV_ACKED, "00")
    [txn], [rev] = rows(engine)
    assert txn.reversal_requested, "the payment must know it was reversed before it is posted"
    assert (rev.transaction_id, rev.state) == ("p1", settle.REV_ACKED)


def test_original_during_the_recording_of_its_reversal_is_declined(engine):
    outcome, (recorded, reversed_first) = race(engine, _reversal, _request, new_payment())
    assert outcome.state == settle.REV_NOT_FOUND
    assert reversed_first and recorded.view.state.value == "DECLINED"
    assert recorded.view.response == DECLINED_12
    [txn], [rev] = rows(engine)
    assert (txn.state, txn.reversal_requested) == ("DECLINED", True)
    assert (rev.transaction_id, rev.state) == ("p1", settle.REV_NOTHING)


def test_reversal_during_the_journaling_of_an_advice_sees_it(engine):
    advice, outcome = race(engine, lambda c: _advice(c, new_payment()), _reversal)
    assert advice.biller_work  # the advised payment was queued for posting
    assert (outcome.transaction_id, outcome.state) == ("p1", settle.REV_ACKED)
    [txn], [rev] = rows(engine)
    assert txn.reversal_requested and txn.advice_received
    assert rev.transaction_id == "p1"


def test_advice_during_the_recording_of_its_reversal_is_not_posted(engine):
    outcome, advice = race(engine, _reversal, _advice, new_payment())
    assert outcome.state == settle.REV_NOT_FOUND
    assert advice.response == ADVICE_0230 and not advice.biller_work
    [txn], [rev] = rows(engine)
    assert (txn.state, txn.advice_received, txn.reversal_requested) == ("EXCEPTION", True, True)
    assert rev.transaction_id == "p1"


@pytest.mark.parametrize("second_kind", ["request", "advice"])
def test_a_repeat_racing_its_original_is_journaled_once(engine, second_kind):
    """The UNIQUE key already made this safe; the lock must not break it."""
    second = _request if second_kind == "request" else _advice
    (first, _), second_result = race(engine, lambda c: _request(c, new_payment("p1")), second,
                                     new_payment("p2"))
    assert first.is_new
    [txn], [] = rows(engine)
    assert txn.id == "p1"
    with engine.connect() as conn:
        assert find_by_keys(conn, **KEYS).id == "p1"
    if second_kind == "advice":
        assert second_result.transaction_id == "p1" and second_result.biller_work is False


def test_the_lock_is_released_with_its_transaction(engine):
    """A transaction-level lock: nothing is left held after COMMIT or ROLLBACK."""
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            _request(conn, new_payment("p1"))
            raise RuntimeError("rolled back")
    run_sync(engine, _reversal)
    [], [rev] = rows(engine)
    assert rev.state == settle.REV_NOT_FOUND
