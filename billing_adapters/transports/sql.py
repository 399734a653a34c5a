"""SQL to a biller's own database: its own engine, its own bounded threads,
and every ending of a transaction classified by what it means for the money.

Database billers (water utilities, municipalities) integrate through tables
in their own database: the gateway reads bills and inserts payments into an
intake table their batch books.  :class:`SqlTransport` is the plumbing every
such adapter shares:

- **its own SQLAlchemy engine** on the biller's URL (any dialect SQLAlchemy
  speaks: an SQLite file, PostgreSQL...) -- never the journal's engine;
- **its own bounded thread pool** (``pool_size`` threads, one connection
  each) -- never the reactor thread, never the reactor's shared pool, never
  the journal's: a locked or slow biller database holds only its own
  threads.  At most ``max_queued`` calls wait for a thread; beyond that a
  call is refused at once (:class:`BillerUnavailable`: nothing was sent);
- **a time bound on the database side too**: a lock wait (``lock_timeout``,
  SQLite's busy timeout / PostgreSQL's ``lock_timeout``), a statement
  (``statement_timeout`` on PostgreSQL) and a connect (``connect_timeout``),
  so a thread the caller gave up on comes back.

What an ending means (:meth:`SqlTransport.write`):

- the transaction failed **before COMMIT was sent** (cannot connect, lock
  wait or statement timed out, a constraint, the connection lost mid-way):
  the database rolled it back -- nothing was recorded:
  :class:`BillerUnavailable` (or the adapter's own decline, raised inside);
- the **COMMIT itself failed** (connection lost while committing): the
  biller may hold the rows -- :class:`BillerOutcomeUnknown`;
- the caller cancelled (its timeout): a thread cannot be interrupted, so
  the Deferred fails at once with ``CancelledError`` while the transaction
  finishes or rolls back on its own -- the caller treats that as outcome
  unknown, as for any biller.

Reads (:meth:`SqlTransport.read`) record nothing: any failure is
:class:`BillerUnavailable`.  Work functions take a Connection and return
plain values built inside the thread (never ``Row``/``Result`` objects on
the reactor thread).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import structlog
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from billgw.billing_adapters.interface import BillerError, BillerOutcomeUnknown, BillerUnavailable

_T = TypeVar("_T")


def biller_url(url: str) -> URL:
    """The URL to connect with.  An SQLite file is opened read-write only
    if it exists (``mode=rw``): a missing file is an unreachable biller, not
    a new, empty one."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            parsed = parsed.set(database=f"file:{path}", query={**parsed.query, "mode": "rw", "uri": "true"})
    return parsed


def make_biller_engine(url: str, *, pool_size: int, lock_timeout: float, statement_timeout: float,
                       connect_timeout: float) -> Engine:
    """An engine for a biller's database, bounded in connections and time."""
    parsed = biller_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(parsed, pool_size=pool_size, max_overflow=0,
                               connect_args={"check_same_thread": False, "timeout": lock_timeout})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")  # the biller's own constraints hold for us too
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # A write takes the lock up front: a locked biller fails here,
            # before anything was written, rather than half-way.
            read = conn.get_execution_options().get("biller_read", False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {
            "connect_timeout": max(1, int(round(connect_timeout))),
            "options": f"-c lock_timeout={int(lock_timeout * 1000)} "
                       f"-c statement_timeout={int(statement_timeout * 1000)}",
        }
    return create_engine(parsed, pool_size=pool_size, max_overflow=0, pool_pre_ping=True,
                         pool_timeout=connect_timeout, connect_args=connect_args)


class _CommitFailed(Exception):
    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


class SqlTransport:
    """One biller database: an engine and a bounded pool of threads."""

    def __init__(self, reactor, url: str, *, pool_size: int = 2, max_queued: int = 32,
                 lock_timeout: float = 5.0, statement_timeout: float = 10.0, connect_timeout: float = 5.0,
                 name: str = "biller-sql", log=None):
        if pool_size < 1 or max_queued < 0:
            raise ValueError("pool_size must be at least 1 and max_queued not negative")
        self._reactor = reactor
        self.url = url
        self.pool_size = pool_size
        self.max_queued = max_queued
        self._engine_args = dict(pool_size=pool_size, lock_timeout=lock_timeout,
                                 statement_timeout=statement_timeout, connect_timeout=connect_timeout)
        self._name = name
        self._log = log or structlog.get_logger("billgw.sql_transport")
        self.engine: Engine | None = None
        self._threads: ThreadPool | None = None
        self._in_flight: set[defer.Deferred] = set()
        self._shutdown_trigger = None

    @property
    def running(self) -> bool:
        return self._threads is not None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def drained(self) -> defer.Deferred:
        """Fires once every call now in flight has ended -- its thread
        included, when the caller gave up on it (tests, orderly stops)."""
        return defer.DeferredList(list(self._in_flight), consumeErrors=True)

    def start(self) -> None:
        """Create the engine (no connection yet) and start the threads."""
        if self._threads is not None:
            return
        self.engine = make_biller_engine(self.url, **self._engine_args)
        self._threads = ThreadPool(minthreads=0, maxthreads=self.pool_size, name=self._name)
        self._threads.start()
        # As the reactor does for its own pool: a process that stops without
        # stopping us does not hang on our (non-daemon) threads.
        self._shutdown_trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._threads.stop)

    def stop(self) -> defer.Deferred[None]:
        """Refuse new calls, let the ones in flight end (their database-side
        timeouts bound them), then stop the threads and close connections."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        threads_, self._threads = self._threads, None
        if threads_ is None:
            return
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._in_flight:
            await defer.DeferredList(list(self._in_flight), consumeErrors=True)
        threads_.stop()  # idle now: joins at once
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.dispose()

    # --- calls -------------------------------------------------------------------

    def read(self, work: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        """Run ``work(conn, *args)`` in a transaction that is rolled back: any
        failure is BillerUnavailable (a read records nothing)."""
        return self._submit(self._read_thd, work, args)

    def write(self, work: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        """Run ``work(conn, *args)`` in a transaction and commit it.  A
        BillerError raised by ``work`` (a decline) passes as it is; a failure
        before COMMIT is BillerUnavailable; a failed COMMIT is
        BillerOutcomeUnknown."""
        return self._submit(self._write_thd, work, args)

    def _submit(self, thd, work, args) -> defer.Deferred:
        if self._threads is None:
            return defer.fail(BillerUnavailable("the biller's database link is stopped"))
        if len(self._in_flight) >= self.pool_size + self.max_queued:
            return defer.fail(BillerUnavailable(
                f"biller database busy: {len(self._in_flight)} calls waiting (pool {self.pool_size}, "
                f"max_queued {self.max_queued})"))
        inner = threads.deferToThreadPool(self._reactor, self._threads, thd, work, args)
        self._in_flight.add(inner)
        # The caller's Deferred: cancelling it cannot stop the thread, so it
        # fails at once and the thread's result is dropped when it comes.
        outer: defer.Deferred = defer.Deferred()

        def ended(result):
            self._in_flight.discard(inner)
            if not outer.called:
                outer.callback(result) if not isinstance(result, Failure) else outer.errback(result)
            return None

        inner.addBoth(ended)
        outer.addErrback(self._classify)
        return outer

    def _classify(self, failure):
        if failure.check(BillerError, defer.CancelledError):
            return failure
        if failure.check(_CommitFailed):
            raise BillerOutcomeUnknown(f"the biller's database failed to confirm the COMMIT "
                                       f"({_first_line(failure.value.cause)})")
        if failure.check(SQLAlchemyError, OSError):
            raise BillerUnavailable(f"biller database: {_first_line(failure.value)} (rolled back)")
        return failure

    def _read_thd(self, work, args):
        engine = self.engine
        if engine is None:
            raise BillerUnavailable("the biller's database link is stopped")
        with engine.connect() as conn:
            conn.execution_options(biller_read=True)
            try:
                return work(conn, *args)
            finally:
                conn.rollback()

    def _write_thd(self, work, args):
        engine = self.engine
        if engine is None:
            raise BillerUnavailable("the biller's database link is stopped")
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                result = work(conn, *args)
            except BaseException:
                trans.rollback()
                raise
            try:
                trans.commit()
            except SQLAlchemyError as exc:
                raise _CommitFailed(exc) from exc
            return result


def run_blocking(url: str, work: Callable[[Connection], _T], *, timeout: float = 30.0, write: bool = False) -> _T:
    """One transaction on a biller's database, blocking -- for offline tools
    (``billgw audit``, the simulator), never on a running reactor."""
    engine = make_biller_engine(url, pool_size=1, lock_timeout=timeout, statement_timeout=timeout,
                                connect_timeout=timeout)
    try:
        with engine.connect() as conn:
            if write:
                with conn.begin():
                    return work(conn)
            conn.execution_options(biller_read=True)
            try:
                return work(conn)
            finally:
                conn.rollback()
    finally:
        engine.dispose()
