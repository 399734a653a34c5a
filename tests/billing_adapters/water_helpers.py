"""The water biller's database for a test: an SQLite file always, a schema of
its own in the PostgreSQL test database when BILLGW_TEST_PG_URL is set (the
journal's tests reset ``public``; the biller's tables live beside it)."""
from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, text

PG_URL = os.environ.get("BILLGW_TEST_PG_URL")
WATER_DB_KINDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def water_db(kind: str, tmp_path) -> tuple[str, str | None]:
    """(url, schema) of a fresh, empty biller database of ``kind``."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'water-biller.sqlite'}", None
    return PG_URL, f"wb_{uuid.uuid4().hex[:10]}"


def drop_schema(url: str, schema: str | None) -> None:
    if schema is None:
        return
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for name in (schema, f"{schema}_down"):
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()
