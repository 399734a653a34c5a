"""Shared fixtures: databases (SQLite always, PostgreSQL when
BILLGW_TEST_PG_URL is set) and a guard that fails a test which logged an
error it did not expect."""
from __future__ import annotations

import os

import pytest
import structlog
from sqlalchemy import text
from twisted.internet import defer

PG_URL = os.environ.get("BILLGW_TEST_PG_URL")


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


@pytest.fixture
def sync_pool(engine):
    return SyncPool(engine)


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request):
    """Fail a test that logged at error level, unless marked allow_errors."""
    with structlog.testing.capture_logs() as logs:
        yield logs
    if request.node.get_closest_marker("allow_errors"):
        return
    errors = [e for e in logs if e.get("log_level") in ("error", "critical")]
    if errors:
        pytest.fail(f"errors were logged: {errors!r}")
