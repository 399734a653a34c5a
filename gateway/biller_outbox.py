"""Store-and-forward work towards billers: the ``biller_outbox`` table.

An item says "do ACTION for this payment at its biller": POST (complete a
payment the switch advised), STATUS (settle an in-doubt payment) or REVERSE.
Items are written in the same transaction as the state change that needs
them, claimed with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several gateway processes never do the same work), retried with exponential
backoff and jitter, and expire into an EXCEPTION a person handles.

Functions take the caller's Connection and return dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from .journal import utc
from .schema import biller_outbox

PENDING, DONE, EXPIRED = "PENDING", "DONE", "EXPIRED"


@dataclass(frozen=True)
class BillerWork:
    id: int
    transaction_id: str
    action: str
    attempts: int
    expired: bool  # past its expiry: give up instead of trying


def enqueue(conn: Connection, transaction_id: str, action: str, *, now: float, first_attempt_at: float,
            expires_at: float) -> int:
    """Add (or re-arm) the item for this payment and action."""
    t = biller_outbox
    row = conn.execute(select(t.c.id, t.c.state).where(
        t.c.transaction_id == transaction_id, t.c.action == action)).first()
    at = utc(now)
    if row is not None:
        if row.state != PENDING:
            conn.execute(update(t).where(t.c.id == row.id).values(
                state=PENDING, attempts=0, next_attempt_at=utc(first_attempt_at),
                expires_at=utc(expires_at), lease_until=None, lease_owner=None, updated_at=at))
        return row.id
    result = conn.execute(t.insert().values(
        transaction_id=transaction_id, action=action, state=PENDING, attempts=0,
        next_attempt_at=utc(first_attempt_at), expires_at=utc(expires_at), created_at=at, updated_at=at))
    return result.inserted_primary_key[0]


def claim_due(conn: Connection, *, now: float, owner: str, lease_seconds: float, limit: int) -> list[BillerWork]:
    t = biller_outbox
    at = utc(now)
    due = and_(t.c.state == PENDING, t.c.next_attempt_at <= at,
               or_(t.c.lease_until.is_(None), t.c.lease_until < at))
    query = select(t).where(due).order_by(t.c.next_attempt_at, t.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return []
    conn.execute(update(t).where(t.c.id.in_([r.id for r in rows])).values(
        lease_until=utc(now + lease_seconds), lease_owner=owner, attempts=t.c.attempts + 1, updated_at=at))
    return [BillerWork(r.id, r.transaction_id, r.action, r.attempts + 1, r.expires_at <= at) for r in rows]


def complete(conn: Connection, item_id: int, *, now: float, state: str = DONE, error: str | None = None) -> None:
    conn.execute(update(biller_outbox).where(biller_outbox.c.id == item_id).values(
        state=state, lease_until=None, updated_at=utc(now), last_error=error[:400] if error else None))


def reschedule(conn: Connection, item_id: int, *, owner: str, now: float, retry_at: float, error: str) -> bool:
    t = biller_outbox
    result = conn.execute(update(t).where(t.c.id == item_id, t.c.lease_owner == owner, t.c.state == PENDING).values(
        next_attempt_at=utc(retry_at), lease_until=None, last_error=error[:400], updated_at=utc(now)))
    return result.rowcount == 1


def backoff(attempts: int, *, base: float, cap: float, jitter: float) -> float:
    """Delay before attempt ``attempts + 1``: base * 2^(attempts-1), capped,
    spread by ``jitter`` (a number in [0, 1) from the caller's RNG) so that
    many items failing together do not retry in lock-step."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay * (0.5 + jitter / 2)
