"""The journal's engine: what every connection it opens promises."""
import sqlite3
import threading

import pytest
import pytest_twisted
from sqlalchemy import event, text
from twisted.internet import defer

from billgw.gateway.db import DatabasePool, JournalBusy, make_engine

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


def _queue_behind_a_blocker(pool, *jobs):
    """Hold the writer with one operation while ``jobs`` queue behind it."""
    release = threading.Event()

    def blocker(conn):
        release.wait(10)
        return _insert(conn, 0)

    first = pool.run(blocker)
    queued = [pool.run(fn, value) for fn, value in jobs]
    release.set()
    return first, queued


@pytest_twisted.ensureDeferred
async def test_queued_operations_share_one_commit(writer_pool):
    pool = writer_pool
    first, queued = _queue_behind_a_blocker(pool, (_insert, 1), (_insert, 2), (_insert, 3))
    assert await first == 0
    seen_committed = []

    def check(value):
        seen_committed.append(value in _values(pool.engine))  # fired only after its COMMIT
        return value

    assert await defer.gatherResults([d.addCallback(check) for d in queued]) == [1, 2, 3]
    assert seen_committed == [True, True, True]
    # The three queued while the writer was busy share one COMMIT (with
    # the blocker's, if they were queued before the writer took it).
    assert pool._writer.operations == 4 and pool._writer.batches <= 2


@pytest_twisted.ensureDeferred
async def test_a_failing_operation_fails_alone(writer_pool):
    """Its batch is rolled back and run again one operation at a time: the
    others commit, the failed one leaves nothing behind."""
    pool = writer_pool
    first, queued = _queue_behind_a_blocker(pool, (_insert, 1), (_insert_then_fail, 2), (_insert, 3))
    assert await first == 0
    results = await defer.DeferredList(queued, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].check(ValueError)
    assert _values(pool.engine) == [0, 1, 3]
    assert await pool.run(_insert, 4) == 4  # the writer goes on


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


# --- back-pressure and reads -------------------------------------------------

@pytest.fixture
def bounded_pool(db_url):
    """A pool of each database kind that admits at most two queued
    operations; its readers on a read-only engine where SQLite needs one."""
    from twisted.internet import reactor

    engine = make_engine(db_url, 6)
    readers = make_engine(db_url, 2, read_only=True) if db_url.startswith("sqlite") else engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS t"))
        conn.execute(text("CREATE TABLE t (v INTEGER PRIMARY KEY)"))
    pool = DatabasePool(engine, reactor, 4, read_engine=readers, max_queued=2)
    pool.startService()
    yield pool
    pytest_twisted.blockon(pool.stopService())
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE t"))
    engine.dispose()
    readers.dispose()


def _blocking_insert(release):
    def blocker(conn):
        release.wait(10)
        return _insert(conn, 0)
    return blocker


@pytest_twisted.ensureDeferred
async def test_new_work_beyond_the_queue_bound_is_refused_at_once_and_writes_nothing(bounded_pool):
    pool = bounded_pool
    release = threading.Event()
    first = pool.admit(_blocking_insert(release))
    second = pool.admit(_insert, 1)
    refused = pool.admit(_insert, 2)
    assert refused.called  # at once, not queued
    with pytest.raises(JournalBusy):
        await refused
    # Work for what is already journaled is never refused.
    settling = pool.run(_insert, 3)
    release.set()
    assert await defer.gatherResults([first, second, settling]) == [0, 1, 3]
    assert _values(pool.engine) == [0, 1, 3]
    assert (pool.queued, pool.refused) == (0, 1)
    assert await pool.admit(_insert, 4) == 4  # room again once the queue drains


@pytest_twisted.ensureDeferred
async def test_a_read_never_waits_for_the_writer(bounded_pool):
    """A look-up answers while a write holds the writer (and, on SQLite,
    the database's write lock), and sees only what is committed."""
    pool = bounded_pool
    assert await pool.run(_insert, 7) == 7
    release = threading.Event()
    held = pool.run(_blocking_insert(release))
    try:
        seen = await pool.read(lambda conn: sorted(r.v for r in conn.execute(text("SELECT v FROM t"))))
    finally:
        release.set()
    assert seen == [7]
    assert await held == 0


def test_the_sqlite_read_engine_refuses_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    writer, reader = make_engine(url, 1), make_engine(url, 1, read_only=True)
    try:
        with writer.begin() as conn:
            conn.execute(text("CREATE TABLE t (v INTEGER)"))
        with pytest.raises(Exception, match="readonly"):
            with reader.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        writer.dispose()
        reader.dispose()
