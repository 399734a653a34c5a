"""The shared SQL transport: every ending of a transaction on a biller's
database judged for the money (SQLite, and PostgreSQL when configured)."""
from __future__ import annotations

import threading

import pytest
import pytest_twisted
from sqlalchemy import text
from twisted.internet import reactor, threads

from billgw.billing_adapters.interface import (
    BillerDeclined,
    BillerOutcomeUnknown,
    BillerUnavailable,
    DeclineReason,
)
from billgw.billing_adapters.transports.sql import SqlTransport, run_blocking

from billing_adapters_helpers import within
from water_helpers import WATER_DB_KINDS, drop_schema, water_db


@pytest.fixture(params=WATER_DB_KINDS)
def database(request, tmp_path):
    url, schema = water_db(request.param, tmp_path)
    prefix = f'"{schema}".' if schema else ""
    if url.startswith("sqlite"):
        open(tmp_path / "water-biller.sqlite", "a").close()

    def create(conn):
        if schema:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text(f"CREATE TABLE {prefix}parent (id INTEGER PRIMARY KEY)"))
        conn.execute(text(f"CREATE TABLE {prefix}child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                          f"REFERENCES {prefix}parent (id) DEFERRABLE INITIALLY DEFERRED)"))

    run_blocking(url, create, write=True)
    yield url, prefix
    drop_schema(url, schema)


@pytest_twisted.async_yield_fixture
async def transport(database):
    made = []

    def make(**kwargs):
        t = SqlTransport(reactor, database[0], **kwargs)
        t.start()
        made.append(t)
        return t

    yield make
    for t in made:
        await within(t.stop())


def count(url, prefix, table):
    return run_blocking(url, lambda conn: conn.execute(text(f"SELECT count(*) FROM {prefix}{table}")).scalar())


@pytest_twisted.ensureDeferred
async def test_commit_that_fails_is_an_unknown_outcome(database, transport):
    url, prefix = database
    sql = transport()

    def orphan(conn):  # the deferred foreign key is checked only at COMMIT
        conn.execute(text(f"INSERT INTO {prefix}child (id, parent_id) VALUES (1, 42)"))

    with pytest.raises(BillerOutcomeUnknown):
        await within(sql.write(orphan))
    assert count(url, prefix, "child") == 0


@pytest_twisted.ensureDeferred
async def test_failure_before_commit_recorded_nothing(database, transport):
    url, prefix = database
    sql = transport()

    def half_way(conn):
        conn.execute(text(f"INSERT INTO {prefix}parent (id) VALUES (1)"))
        conn.execute(text(f"INSERT INTO {prefix}parent (id) VALUES (1)"))  # a duplicate key, before COMMIT

    with pytest.raises(BillerUnavailable):
        await within(sql.write(half_way))
    assert count(url, prefix, "parent") == 0


@pytest_twisted.ensureDeferred
async def test_a_decline_raised_inside_passes_and_rolls_back(database, transport):
    url, prefix = database
    sql = transport()

    def refuse(conn):
        conn.execute(text(f"INSERT INTO {prefix}parent (id) VALUES (7)"))
        raise BillerDeclined(DeclineReason.NO_BILL_DUE, "nothing due")

    with pytest.raises(BillerDeclined):
        await within(sql.write(refuse))
    assert count(url, prefix, "parent") == 0
    assert await within(sql.write(lambda conn: conn.execute(
        text(f"INSERT INTO {prefix}parent (id) VALUES (7)")).rowcount)) == 1
    assert count(url, prefix, "parent") == 1


@pytest_twisted.ensureDeferred
async def test_calls_beyond_threads_and_queue_are_refused_at_once(database, transport):
    url, prefix = database
    sql = transport(pool_size=1, max_queued=1)
    release = threading.Event()
    first = sql.read(lambda conn: release.wait(30))
    second = sql.read(lambda conn: 2)  # waits for the one thread
    with pytest.raises(BillerUnavailable, match="busy"):
        await within(sql.read(lambda conn: 3))
    release.set()
    assert await within(first) is True and await within(second) == 2


@pytest_twisted.ensureDeferred
async def test_the_reactor_thread_never_runs_the_work(database, transport):
    sql = transport()
    assert await within(sql.read(lambda conn: threading.current_thread() is threading.main_thread())) is False
    assert await within(threads.deferToThread(lambda: True))  # the reactor's own pool is still free
