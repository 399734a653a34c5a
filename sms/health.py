"""The SMPP link's health, written where ``billgw audit`` can read it.

The link knows its state (``SmppLink.health()``: BOUND, DOWN, REFUSED...),
but only inside its own process, and a bind refused for its credentials is
otherwise only an error line in that process's log.  Several gateway
processes may share one journal database, and ``billgw audit`` is another
process again: so the state goes into the database, one row per bind
(``sms_link_health``, keyed by ``system_id@host:port``), the last writer
winning -- every process binding with the same credentials to the same SMSC
gets the same answer from it.

:class:`LinkHealthRecorder` polls the link on the injected clock and writes
a row when the state changes, and at least every ``heartbeat`` seconds so
that the audit can tell a live state from one left by a process that died
(``updated_at``).  On a clean stop it writes STOPPED.  Writes go through
``run_in_db`` like the outbox's (never on the reactor thread); a failed
write is logged and retried at the next poll -- it never touches sending.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import structlog
from sqlalchemy import Column, DateTime, Integer, String, Table, select, update
from twisted.application.service import Service
from twisted.internet import defer, task

from billgw.sms.outbox import metadata, utc

sms_link_health = Table(
    "sms_link_health",
    metadata,
    Column("link", String(120), primary_key=True),  # system_id@host:port
    Column("state", String(12), nullable=False),  # the link's LinkState value
    Column("last_bind_status", Integer, nullable=True),
    Column("last_error", String(400), nullable=True),
    Column("owner", String(64), nullable=False),  # the process that wrote it
    Column("updated_at", DateTime, nullable=False),
)


@dataclass(frozen=True)
class LinkHealthRow:
    link: str
    state: str
    last_bind_status: int | None
    last_error: str | None
    owner: str
    updated_at: _dt.datetime


def link_name(system_id: str, host: str, port: int) -> str:
    return f"{system_id}@{host}:{port}"


def write_health(conn, *, link: str, state: str, last_bind_status: int | None, last_error: str | None,
                 owner: str, now: float) -> None:
    """Upsert the row of ``link`` (an UPDATE, then an INSERT if there was none)."""
    values = dict(state=state, last_bind_status=last_bind_status,
                  last_error=(last_error or None) and last_error[:400], owner=owner[:64], updated_at=utc(now))
    done = conn.execute(update(sms_link_health).where(sms_link_health.c.link == link).values(**values))
    if done.rowcount == 0:
        conn.execute(sms_link_health.insert().values(link=link, **values))


def read_health(conn) -> list[LinkHealthRow]:
    rows = conn.execute(select(sms_link_health).order_by(sms_link_health.c.link)).all()
    return [LinkHealthRow(r.link, r.state, r.last_bind_status, r.last_error, r.owner, r.updated_at) for r in rows]


class LinkHealthRecorder(Service):
    """Writes ``link.health()`` to ``sms_link_health`` on change and on a heartbeat."""

    def __init__(self, *, run_in_db, link, clock, name: str, owner: str, interval: float = 5.0,
                 heartbeat: float = 60.0, logger=None):
        self._run_in_db = run_in_db
        self._link = link
        self._clock = clock
        self.link_name = name
        self.owner = owner
        self.interval = interval
        self.heartbeat = heartbeat
        self._log = (logger or structlog.get_logger()).bind(sms_link=name)
        self._loop: task.LoopingCall | None = None
        self._written: tuple | None = None
        self._written_at = float("-inf")
        self._writing: defer.Deferred | None = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        pending = self._writing if self._writing is not None else defer.succeed(None)
        return pending.addBoth(lambda _: self._write(("STOPPED", None, None), force=True))

    def poll(self) -> defer.Deferred:
        health = self._link.health()
        snapshot = (health["state"], health.get("last_bind_status"), health.get("last_error"))
        return self._write(snapshot)

    def _write(self, snapshot: tuple, force: bool = False) -> defer.Deferred:
        now = self._clock.seconds()
        if self._writing is not None:
            return defer.succeed(None)  # the next poll writes what has changed meanwhile
        if not force and snapshot == self._written and now - self._written_at < self.heartbeat:
            return defer.succeed(None)
        state, status, error = snapshot
        d = self._run_in_db(write_health, link=self.link_name, state=state, last_bind_status=status,
                            last_error=error, owner=self.owner, now=now)
        self._writing = d

        def written(_):
            self._written, self._written_at = snapshot, now

        def failed(f):
            self._log.warning("sms.health_write_failed", error=f.getErrorMessage())

        def done(_):
            self._writing = None

        d.addCallbacks(written, failed)
        d.addBoth(done)
        return d
