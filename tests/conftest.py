"""Shared fixtures: databases (SQLite always, PostgreSQL when
BILLGW_TEST_PG_URL is set and answers at session start) and a guard that
fails a test which logged an error, in structlog or Twisted, it did not
expect."""
from __future__ import annotations

import gc
import os

import pytest
import structlog
from sqlalchemy import text
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

PG_URL = os.environ.get("BILLGW_TEST_PG_URL")
PG_CONNECT_TIMEOUT = 5  # seconds


def pytest_sessionstart(session):
    """With BILLGW_TEST_PG_URL set, PostgreSQL must answer before any test
    runs: a run that meant to cover PostgreSQL stops at once, naming the URL
    (password hidden), instead of losing those runs in a flood of errors."""
    if not PG_URL:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    engine = create_engine(PG_URL, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT})
    try:
        with engine.connect():
            pass
    except Exception as exc:
        shown = make_url(PG_URL).render_as_string(hide_password=True)
        pytest.exit(f"BILLGW_TEST_PG_URL={shown}: PostgreSQL cannot be reached: {getattr(exc, 'orig', exc)}",
                    returncode=3)
    finally:
        engine.dispose()


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


DB_KINDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(params=DB_KINDS)
def db_url(request, tmp_path):
    """A fresh, empty journal database URL of each kind under test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.sqlite'}"
    _reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def engine(db_url):
    from billgw.gateway.db import make_engine
    from billgw.gateway.migrate import upgrade

    eng = make_engine(db_url, 4)
    upgrade(eng)
    yield eng
    eng.dispose()


class SyncPool:
    """Runs journal operations synchronously (unit tests: no threads)."""

    def __init__(self, engine):
        self.engine = engine

    def run(self, fn, *args, **kwargs):
        try:
            with self.engine.begin() as conn:
                return defer.succeed(fn(conn, *args, **kwargs))
        except Exception:
            return defer.fail()

    # No queue to bound, no writer to wait behind; through run() so that a
    # test wrapping run() sees every operation.
    def admit(self, fn, *args, **kwargs):
        return self.run(fn, *args, **kwargs)

    def read(self, fn, *args, **kwargs):
        return self.run(fn, *args, **kwargs)


@pytest.fixture
def sync_pool(engine):
    return SyncPool(engine)


def _is_twisted_error(event) -> bool:
    return "log_failure" in event or event.get("log_level") in (LogLevel.error, LogLevel.critical)


def _format_twisted_event(event) -> str:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        traceback = failure.getTraceback()
        if traceback not in text:  # legacy log.err events already carry it
            text += "\n" + traceback
    return text


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request):
    """Fail a test that logged at error level, unless marked allow_errors.

    Two logs are watched: structlog's, where our code reports, and Twisted's,
    where what our code let slip shows up -- an exception in a protocol
    callback, ``log.failure``, legacy ``log.err``, and a Deferred that failed
    with nobody to handle it.  Twisted logs that last one only when the
    Deferred is garbage-collected, hence ``gc.collect()`` before looking.

    What survives a test is then frozen out of later collections
    (``gc.freeze``), so that each test's collection walks only what that
    test created: a full one walks every module, class and function of
    Twisted, SQLAlchemy and the rest (~70 ms), which turned a half-minute
    unit run of a few thousand tests into minutes.  The price: garbage
    cycles of objects that outlived their test are never collected, so a
    Deferred in one, failing after its test ended, is not reported."""
    twisted_errors = []

    def observe(event):
        if _is_twisted_error(event):
            twisted_errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
            gc.collect()
            gc.freeze()
    finally:
        globalLogPublisher.removeObserver(observe)
    if request.node.get_closest_marker("allow_errors"):
        return
    errors = [f"structlog: {e!r}" for e in logs if e.get("log_level") in ("error", "critical")]
    errors += [f"Twisted: {_format_twisted_event(e)}" for e in twisted_errors]
    if errors:
        pytest.fail("errors were logged:\n\n" + "\n\n".join(errors), pytrace=False)
