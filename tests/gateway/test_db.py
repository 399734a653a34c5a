"""The journal's engine: what every connection it opens promises."""
import sqlite3
import threading

import pytest
import pytest_twisted
from sqlalchemy import event, text
from twisted.internet import defer

from billgw.gateway.db import DatabasePool, make_engine

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_sqlite_commits_are_durable_and_writers_take_the_lock_up_front(tmp_path):
    """An approval or an acknowledgement goes out only after its COMMIT; with
    synchronous=NORMAL a WAL commit can still be lost on power loss."""
    path = tmp_path / "j.sqlite"
    engine = make_engine(f"sqlite:///{path}", 2)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == FULL
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            # BEGIN IMMEDIATE: this transaction holds the write lock before
            # it has written anything, so no other writer can start.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released with the COMMIT
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


# --- group commit (SQLite) ------------------------------------------------------

def _insert(conn, value):
    conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
    return value


def _insert_then_fail(conn, value):
    _insert(conn, value)
    raise ValueError(f"no {value}")


def _values(engine):
    with engine.connect() as conn:
        return sorted(r.v for r in conn.execute(text("SELECT v FROM t")))


@pytest.fixture
def writer_pool(tmp_path):
    from twisted.internet import reactor  # callFromThread needs the running reactor

    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}", 2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER PRIMARY KEY)"))
    pool = DatabasePool(engine, reactor)
    pool.startService()
    yield pool
    pytest_twisted.blockon(pool.stopService())
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_queued_operations_share_one_commit_and_each_keeps_its_own_outcome(writer_pool):
    pool = writer_pool
    release = threading.Event()

    def blocker(conn):  # holds the writer while the others queue up behind it
        release.wait(10)
        return _insert(conn, 0)

    first = pool.run(blocker)
    queued = [pool.run(_insert, 1), pool.run(_insert_then_fail, 2), pool.run(_insert, 3)]
    release.set()
    assert await first == 0
    seen_committed = []

    def check(value):
        seen_committed.append(value in _values(pool.engine))  # fired only after its COMMIT
        return value

    results = await defer.DeferredList([d.addCallback(check) for d in queued], consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].check(ValueError)
    assert seen_committed == [True, True]
    assert _values(pool.engine) == [0, 1, 3]  # the failed one's SAVEPOINT rolled back, alone
    # The three queued while the writer was busy share one COMMIT (with
    # the blocker's, if they were queued before the writer took it).
    assert pool._writer.operations == 4 and pool._writer.batches <= 2


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_fails_every_operation_of_its_batch(writer_pool):
    pool = writer_pool

    def refuse(conn):
        raise OSError("disk full")

    event.listen(pool.engine, "commit", refuse)
    try:
        results = await defer.DeferredList([pool.run(_insert, 1), pool.run(_insert, 2)], consumeErrors=True)
    finally:
        event.remove(pool.engine, "commit", refuse)
    assert [ok for ok, _ in results] == [False, False]
    assert _values(pool.engine) == []
    assert await pool.run(_insert, 3) == 3  # the writer goes on
