"""The journal's engine: what every connection it opens promises."""
import sqlite3

import pytest
from sqlalchemy import text

from billgw.gateway.db import make_engine

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
