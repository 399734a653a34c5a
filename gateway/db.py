"""The database behind a reactor: engine set-up and the journal's own threads.

SQLAlchemy sessions block, so every journal operation runs off the reactor
thread -- on SQLite one group-committing writer thread, on PostgreSQL a
dedicated, bounded thread pool (never the reactor's shared one, which also
resolves host names) -- and returns plain dataclasses, never rows or
``Result`` objects, to the reactor thread.  The pool is Buildbot's
``DBThreadPool`` pattern; see :class:`DatabasePool` for the writer.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


def make_engine(url: str, pool_size: int = 4, *, read_only: bool = False) -> Engine:
    """An engine tuned for the journal.

    SQLite: WAL (readers never wait for the writer), a busy timeout, and
    ``BEGIN IMMEDIATE`` so a transaction takes the write lock up front instead
    of failing half-way when two threads upgrade a read lock at once.
    ``synchronous=FULL``: every COMMIT is on disk before it returns.  With
    NORMAL, WAL mode may lose the last commits on power loss or an OS crash
    -- a lost RECEIVED row would give the switch's repeat a new payment id,
    a second posting at the biller, and a lost reversal would break the
    promise its 0430 made.  (PostgreSQL's default commit is durable.)

    ``read_only`` (SQLite): the engine of the readers -- a plain deferred
    ``BEGIN``, which in WAL mode reads a snapshot without the write lock, so
    a read never waits for the writer's batch; ``query_only`` makes a write
    through it an error instead of a lock taken by surprise.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            if read_only:
                cursor.execute("PRAGMA query_only=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True)


class DatabasePool(Service):
    """Runs ``fn(conn, *args)`` inside a transaction, off the reactor thread.

    SQLite has one writer at a time, so its operations go to one writer
    thread that **group-commits**: it takes every operation queued by the
    time it is free (up to ``max_batch``), runs them in one transaction,
    COMMITs once, and only then fires each operation's Deferred with its
    result.  When one raises, the batch is rolled back and each operation
    runs again alone, so its failure is its own (see
    :meth:`GroupCommitWriter._commit`).  Nothing waits
    for company: under light load a batch is one operation.  One durable
    COMMIT (``synchronous=FULL``: an fsync) then serves many payments, where
    it was one per operation -- the profile of the approved path showed the
    COMMITs as a third of the gateway's busy samples.  A failed COMMIT fails
    every operation of the batch: none of them happened.

    PostgreSQL keeps a bounded pool of threads, one transaction per
    operation: several writers there would hold each other's advisory and
    row locks across a batch (deadlocks that abort whole batches), and its
    own WAL already groups concurrent commits.

    **Reads** (:meth:`read`) have threads of their own, on both databases,
    so a look-up never queues behind the writer's work; on SQLite they use
    ``read_engine`` (see :func:`make_engine`'s ``read_only``).

    **Back-pressure**: :meth:`admit` is how *new* work enters (a request
    journaled for the first time): beyond ``max_queued`` operations waiting
    or running it fails at once with :class:`JournalBusy`, which the
    processor answers "busy" with nothing written.  Work for what is already
    journaled (:meth:`run`: the biller's answer, a receipt's marks) is never
    refused -- dropping it would strand a payment -- and is bounded by what
    was admitted.
    """

    name = "database"

    def __init__(self, engine: Engine, reactor, max_threads: int = 4, *, max_batch: int = 64,
                 read_engine: Engine | None = None, read_threads: int = 2, max_queued: int = 1024):
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self.engine = engine
        self._reactor = reactor
        self._read_engine = read_engine or engine
        self._readers = ThreadPool(minthreads=0, maxthreads=read_threads, name="billgw-db-read")
        self.max_queued = max_queued
        self.queued = 0  # operations waiting or running (writes): what admit() bounds
        self.refused = 0  # new work refused by admit(): for figures and logs
        if engine.dialect.name == "sqlite":
            self._writer: GroupCommitWriter | None = GroupCommitWriter(engine, reactor, max_batch)
            self._pool = None
        else:
            self._writer = None
            self._pool = ThreadPool(minthreads=1, maxthreads=max_threads, name="billgw-db")

    def startService(self):
        super().startService()
        self._readers.start()
        if self._writer is not None:
            self._writer.start()
        else:
            self._pool.start()

    def stopService(self):
        super().stopService()
        # Joining the workers blocks, so it happens off the reactor thread.
        stop = self._writer.stop if self._writer is not None else self._pool.stop

        def stop_all():
            stop()
            self._readers.stop()
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), stop_all)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run a write in its own (or a batch's) transaction; never refused."""
        self.queued += 1
        if self._writer is not None:
            d = self._writer.run(fn, *args, **kwargs)
        else:
            d = deferToThreadPool(self._reactor, self._pool, self._transaction, fn, args, kwargs)
        return d.addBoth(self._done)

    def admit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """:meth:`run` for new work, refused with :class:`JournalBusy` (and
        nothing written) while ``max_queued`` operations are queued."""
        if self.queued >= self.max_queued:
            self.refused += 1
            return fail(JournalBusy(f"{self.queued} journal operations queued (max_queued {self.max_queued})"))
        return self.run(fn, *args, **kwargs)

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn(conn, ...)`` on a reader thread, in a read transaction.
        It sees what is committed; it never waits for the writer."""
        return deferToThreadPool(self._reactor, self._readers, self._read, fn, args, kwargs)

    def _done(self, result):
        self.queued -= 1
        return result

    def _transaction(self, fn, args, kwargs):
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    def _read(self, fn, args, kwargs):
        with self._read_engine.connect() as conn:
            with conn.begin():
                return fn(conn, *args, **kwargs)


class JournalBusy(Exception):
    """New work refused: the journal's queue is full (back-pressure)."""


_STOP = object()


class GroupCommitWriter:
    """One thread, one transaction per batch of queued operations (see
    :class:`DatabasePool`, whose ``admit`` bounds what enters its queue)."""

    def __init__(self, engine: Engine, reactor, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._reactor = reactor
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None  # the writer thread's own, for its life
        self.batches = 0  # how many COMMITs served how many operations: for tests and figures
        self.operations = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="billgw-db-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Blocking: finish what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        d: Deferred = Deferred()
        self._queue.put((fn, args, kwargs, d))
        return d

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                self._drop_connection()
                return
            batch = [job]
            while len(batch) < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            outcomes = self._commit(batch)
            self._reactor.callFromThread(_fire, outcomes)
        self._drop_connection()

    def _commit(self, batch) -> list[tuple[Deferred, Any]]:
        """Run the batch in one transaction; if anything in it fails, roll
        it all back and run each operation alone, so that one operation's
        failure is its own and never another's.

        The operations are functions of the database and their arguments
        (nothing else is touched before their Deferreds fire), so a rolled-
        back batch leaves no trace and running one again is running it
        first.  Failures are the exception: the batch then costs twice.
        The connection stays open for the writer's life (a pool check-out
        and its reset on return, per batch, showed in the profile); one
        that breaks is dropped and opened again for the next batch."""
        try:
            results = self._in_one_transaction(batch)
        except Exception:
            failure = Failure()
            self._drop_connection()
            if len(batch) == 1:
                return [(batch[0][3], failure)]
            return [self._alone(job) for job in batch]
        self.batches += 1
        self.operations += len(batch)
        return [(job[3], result) for job, result in zip(batch, results)]

    def _in_one_transaction(self, batch) -> list[Any]:
        conn = self._connection()
        with conn.begin():
            return [fn(conn, *args, **kwargs) for fn, args, kwargs, _ in batch]

    def _alone(self, job) -> tuple[Deferred, Any]:
        fn, args, kwargs, d = job
        try:
            result = self._in_one_transaction([job])[0]
        except Exception:
            self._drop_connection()
            return d, Failure()
        self.batches += 1
        self.operations += 1
        return d, result

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass  # a broken connection may fail to close: it is gone either way


def _fire(outcomes) -> None:
    for d, result in outcomes:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)


def run_sync(engine: Engine, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a journal operation in the calling thread (CLI tools, audits)."""
    with engine.begin() as conn:
        return fn(conn, *args, **kwargs)


__all__ = ["Connection", "DatabasePool", "JournalBusy", "make_engine", "run_sync"]
