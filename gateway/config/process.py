"""``[database]`` (where the journal lives) and ``[logging]``: the process's own tables."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .reader import _one_of, _Section


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/billgw.sqlite"
    pool_size: int = 4
    auto_upgrade: bool = True
    # Journal operations queued at most before new requests are answered
    # "busy" (back-pressure in front of the writer; see gateway/db.py).
    max_queued: int = 1024


@dataclass(frozen=True)
class LoggingSettings:
    format: str = "json"
    level: str = "info"


def _database(s: _Section, base: Path) -> DatabaseSettings:
    d = DatabaseSettings()
    url = s.get("url", str, d.url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        url = "sqlite:///" + str((base / url[len("sqlite:///"):]).resolve())
    out = DatabaseSettings(
        url=url,
        pool_size=s.get("pool_size", int, d.pool_size, check=lambda v: None if 1 <= v <= 64 else "must be 1..64"),
        auto_upgrade=s.get("auto_upgrade", bool, d.auto_upgrade),
        max_queued=s.get("max_queued", int, d.max_queued,
                         check=lambda v: None if 1 <= v <= 1_000_000 else "must be 1..1000000"),
    )
    s.done()
    return out


def _logging(s: _Section) -> LoggingSettings:
    out = LoggingSettings(
        format=s.get("format", str, "json", check=_one_of("json", "console")),
        level=s.get("level", str, "info", check=_one_of("debug", "info", "warning", "error")),
    )
    s.done()
    return out
