"""The SMS outbox: one durable row per receipt to send.

The gateway writes a row here in the *same* database transaction that marks a
payment CONFIRMED, so a receipt exists exactly when the confirmation does.  The
sender (``billgw.sms.sender``) claims due rows with a lease, submits them over
SMPP and records the SMSC's message ids.  A claim is a lease, not a lock held
across the network.  A process that dies while sending leaves a row whose
lease expires; whether the SMSC took that message is unknown (SMPP 3.4 has no
idempotent submit), and the subscriber must never get a receipt twice, so the
row becomes UNCERTAIN -- not sent again -- and ``billgw audit`` lists it for a
person.  Delivery is at most once across a crash, exactly once otherwise.

The functions take an open SQLAlchemy ``Connection`` inside the caller's
transaction and return plain dataclasses; they never start threads.  Who runs
them (a bounded DB thread pool) is the caller's business.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, replace

from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.engine import Connection

from billgw.sms.dlr import message_key
from billgw.sms.outbox_tables import (  # the tables and states, importable from here as before
    OutboxKind,
    OutboxState,
    metadata,
    sms_outbox,
    sms_outbox_events,
    sms_outbox_parts,
    utc,
)

__all__ = [
    "OutboxItem", "OutboxKind", "OutboxState", "Outcome", "cancel_unsent", "claim_for_submit", "enqueue",
    "expire_stale", "get_for_payment", "may_have_left", "message_ids", "metadata", "record_outcomes",
    "sms_outbox", "sms_outbox_events", "sms_outbox_parts", "utc",
]


@dataclass(frozen=True)
class OutboxItem:
    id: int
    payment_id: str
    kind: str
    msisdn: str
    language: str
    text: str
    state: str
    attempts: int
    resends: int = 0


def _item(row) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        payment_id=row.payment_id,
        kind=row.kind,
        msisdn=row.msisdn,
        language=row.language,
        text=row.text,
        state=row.state,
        attempts=row.attempts,
        resends=row.resends,
    )


def enqueue(
    conn: Connection,
    *,
    payment_id: str,
    kind: OutboxKind,
    msisdn: str,
    language: str,
    text: str,
    now: float,
    state: OutboxState = OutboxState.QUEUED,
) -> int:
    """Add a message unless this payment already has one of this kind.

    Returns the row id (the existing one for a repeat), so callers replaying a
    confirmation never create a second receipt.
    """
    existing = conn.execute(_EXISTING, {"b_payment": payment_id, "b_kind": kind.value}).scalar_one_or_none()
    if existing is not None:
        return existing
    at = utc(now)
    result = conn.execute(_INSERT, {
        "payment_id": payment_id, "kind": kind.value, "msisdn": msisdn, "language": language, "text": text,
        "state": state.value, "attempts": 0, "resends": 0, "next_attempt_at": at, "created_at": at, "updated_at": at,
        "queued_at": at})
    return result.inserted_primary_key[0]


# Built once: every confirmed payment runs these (see gateway/journal.py).
_EXISTING = select(sms_outbox.c.id).where(sms_outbox.c.payment_id == bindparam("b_payment"),
                                          sms_outbox.c.kind == bindparam("b_kind"))
_INSERT = sms_outbox.insert()


_CLAIMABLE = (OutboxState.QUEUED.value, OutboxState.FAILED.value)


def claim_for_submit(
    conn: Connection, *, now: float, owner: str, lease_seconds: float, limit: int,
    expire_after: float | None = None,
) -> list[OutboxItem]:
    """Claim up to ``limit`` due messages and mark them SENDING, in one statement pair.

    What the windowed sender uses: the rows go to the SMPP link at once (its
    window holds them), so a separate reservation before each submit_sm
    would only cost a transaction per receipt.  The price: a sender that
    dies leaves at most one window of rows UNCERTAIN (never resent), instead
    of only the one in mid-submit.  A SENDING row whose lease expired (its
    sender died) becomes UNCERTAIN here instead of being sent again; on
    PostgreSQL the rows are selected ``FOR UPDATE SKIP LOCKED`` so that
    several gateway processes never claim the same row.  With
    ``expire_after``, a row still unsent that long after it was queued (or
    resent) is not sent any more: it becomes EXPIRED (:func:`expire_stale`).
    """
    at = utc(now)
    _expire_dead_senders(conn, at)
    if expire_after is not None:
        expire_stale(conn, now=now, expire_after=expire_after)
    query = _DUE_FOR_UPDATE if conn.dialect.name == "postgresql" else _DUE
    rows = conn.execute(query, {"b_at": at, "b_limit": limit}).all()
    if not rows:
        return []
    conn.execute(_CLAIM, {"b_ids": [r.id for r in rows], "b_sending": OutboxState.SENDING.value,
                          "b_lease": utc(now + lease_seconds), "b_owner": owner, "b_at": at})
    return [replace(_item(r), attempts=r.attempts + 1, state=OutboxState.SENDING.value) for r in rows]


EXPIRE_BATCH = 500  # rows expired per claim at most: a claim stays short


def expire_stale(conn: Connection, *, now: float, expire_after: float) -> int:
    """Rows QUEUED or FAILED since more than ``expire_after`` seconds become
    EXPIRED, each with an event: a receipt a day late is worse than none
    (the subscriber has the ATM slip; an SMS tomorrow reads as a second
    payment).  Counted from ``queued_at``: the row's creation, or the
    operator's last resend.  Returns how many expired."""
    t = sms_outbox
    at = utc(now)
    limit_at = utc(now - expire_after)
    stale = and_(t.c.state.in_(_CLAIMABLE), t.c.queued_at < limit_at,
                 or_(t.c.lease_until.is_(None), t.c.lease_until < at))
    query = select(t.c.id, t.c.state, t.c.attempts).where(stale).order_by(t.c.id).limit(EXPIRE_BATCH)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return 0
    reason = f"not submitted within {expire_after:g}s of being queued: not sent any more"
    conn.execute(
        update(t).where(t.c.id.in_([r.id for r in rows]), t.c.state.in_(_CLAIMABLE))
        .values(state=OutboxState.EXPIRED.value, lease_until=None, lease_owner=None, updated_at=at,
                last_error=reason)
    )
    conn.execute(sms_outbox_events.insert(), [
        dict(outbox_id=r.id, at=at, event="EXPIRED", from_state=r.state, to_state=OutboxState.EXPIRED.value,
             actor="sender", detail=f"{reason} (after {r.attempts} attempt(s))") for r in rows])
    return len(rows)


def _expire_dead_senders(conn: Connection, at: _dt.datetime) -> None:
    conn.execute(_EXPIRE, {"b_at": at})


# Built once with bind parameters (see gateway/journal.py): the sender runs
# these for every window, and building them per call showed in the profile.
_DUE = (select(sms_outbox).where(
    sms_outbox.c.state.in_(_CLAIMABLE), sms_outbox.c.next_attempt_at <= bindparam("b_at"),
    or_(sms_outbox.c.lease_until.is_(None), sms_outbox.c.lease_until < bindparam("b_at")))
    .order_by(sms_outbox.c.id).limit(bindparam("b_limit")))
_DUE_FOR_UPDATE = _DUE.with_for_update(skip_locked=True)
_CLAIM = (update(sms_outbox).where(sms_outbox.c.id.in_(bindparam("b_ids", expanding=True)))
          .values(state=bindparam("b_sending"), attempts=sms_outbox.c.attempts + 1,
                  lease_until=bindparam("b_lease"), lease_owner=bindparam("b_owner"),
                  updated_at=bindparam("b_at")))
_EXPIRE = (update(sms_outbox).where(sms_outbox.c.state == OutboxState.SENDING.value,
                                    sms_outbox.c.lease_until < bindparam("b_at"))
           .values(state=OutboxState.UNCERTAIN.value, lease_until=None, updated_at=bindparam("b_at"),
                   last_error="sender died mid-submit: not resent, the SMSC may have it"))
# SET columns come from each outcome's parameters (compiled once per set).
_RECORD = update(sms_outbox).where(sms_outbox.c.id == bindparam("b_id"),
                                   sms_outbox.c.state == OutboxState.SENDING.value,
                                   sms_outbox.c.lease_owner == bindparam("b_owner"))


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted row, for :func:`record_outcomes`.

    ``state`` is SENT, FAILED (retry at ``retry_at``), ABANDONED, UNCERTAIN,
    or QUEUED for a row handed back untouched (the link went down before
    writing it: the attempt is given back).  ``message_ids`` are the parts
    the SMSC accepted, in part order, with ``part_times`` (when each was
    accepted) and the ``smsc`` that took them; ``attempt`` and ``resends``
    are the row's when it was claimed (they key its parts).
    """

    item_id: int
    state: OutboxState
    message_ids: tuple[str, ...] = ()
    data_coding: int | None = None
    parts: int | None = None
    error: str | None = None
    retry_at: float | None = None
    part_times: tuple[float, ...] = ()
    smsc: str | None = None
    attempt: int = 0
    resends: int = 0


def record_outcomes(conn: Connection, outcomes: list[Outcome], *, owner: str, now: float) -> list[bool]:
    """Record many rows' outcomes in the caller's one transaction.

    Each update holds only if the row is still SENDING under ``owner`` (its
    lease may have been lost meanwhile); returns one flag per outcome.  The
    accepted parts go to ``sms_outbox_parts`` even when the lease was lost:
    the SMSC has them, and their receipts must find their row.
    """
    t = sms_outbox
    at = utc(now)
    done = []
    parts = []
    for o in outcomes:
        values = dict(state=o.state.value, lease_until=None, updated_at=at, last_error=(o.error or None) and o.error[:400])
        if o.state is OutboxState.SENT:
            values.update(data_coding=o.data_coding, parts=o.parts, last_error=None)
        elif o.state is OutboxState.FAILED:
            values.update(next_attempt_at=utc(o.retry_at if o.retry_at is not None else now))
        elif o.state is OutboxState.QUEUED:
            # Handed back unsent: the attempt did not happen.  FAILED keeps
            # the row's earlier failure visible if it had one.
            values.update(attempts=t.c.attempts - 1, lease_owner=None,
                          state=case((t.c.attempts > 1, OutboxState.FAILED.value),
                                     else_=OutboxState.QUEUED.value))
            if o.retry_at is not None:  # not at once: its SMSC is down
                values.update(next_attempt_at=utc(o.retry_at))
        if o.state is OutboxState.QUEUED:  # SQL expressions: built for the rare hand-back
            result = conn.execute(
                update(t).where(t.c.id == o.item_id, t.c.state == OutboxState.SENDING.value,
                                t.c.lease_owner == owner).values(**values)
            )
        else:
            result = conn.execute(_RECORD, {"b_id": o.item_id, "b_owner": owner, **values})
        done.append(result.rowcount == 1)
        if o.message_ids and result.rowcount != 1 and conn.execute(
                select(sms_outbox_parts.c.id).where(sms_outbox_parts.c.outbox_id == o.item_id,
                                                    sms_outbox_parts.c.resend_no == o.resends,
                                                    sms_outbox_parts.c.attempt == o.attempt).limit(1)).first():
            continue  # this submission's parts are recorded already
        for number, message_id in enumerate(o.message_ids, start=1):
            times = o.part_times
            submitted = utc(times[number - 1]) if len(times) >= number else at
            parts.append(dict(outbox_id=o.item_id, resend_no=o.resends, attempt=o.attempt, part_number=number,
                              smsc=o.smsc, message_id=message_id[:65], message_key=message_key(message_id)[:65],
                              submitted_at=submitted))
    if parts:
        conn.execute(sms_outbox_parts.insert(), parts)
    return done


def cancel_unsent(conn: Connection, payment_id: str, *, now: float) -> int:
    """Cancel a payment's receipt that has not left yet (payment reversed)."""
    t = sms_outbox
    result = conn.execute(
        update(t)
        .where(
            t.c.payment_id == payment_id,
            t.c.kind == OutboxKind.RECEIPT.value,
            t.c.state.in_((OutboxState.WAITING.value, OutboxState.QUEUED.value, OutboxState.FAILED.value)),
        )
        .values(state=OutboxState.CANCELLED.value, updated_at=utc(now))
    )
    return result.rowcount


def get_for_payment(conn: Connection, payment_id: str) -> list[OutboxItem]:
    rows = conn.execute(
        select(sms_outbox).where(sms_outbox.c.payment_id == payment_id).order_by(sms_outbox.c.id)
    ).all()
    return [_item(r) for r in rows]


def message_ids(conn: Connection, outbox_id: int) -> list[str]:
    """The SMSC's ids of the row's latest submission, in part order."""
    p = sms_outbox_parts
    latest = conn.execute(select(p.c.resend_no, p.c.attempt).where(p.c.outbox_id == outbox_id)
                          .order_by(p.c.resend_no.desc(), p.c.attempt.desc()).limit(1)).one_or_none()
    if latest is None:
        return []
    return list(conn.execute(select(p.c.message_id).where(
        p.c.outbox_id == outbox_id, p.c.resend_no == latest.resend_no, p.c.attempt == latest.attempt)
        .order_by(p.c.part_number)).scalars())


# Rows whose message may be on the subscriber's phone, whatever the receipts
# said (an UNDELIVERABLE message may have shown some of its parts).
_MAYBE_LEFT = frozenset({OutboxState.SENDING.value, OutboxState.SENT.value, OutboxState.UNCERTAIN.value,
                         OutboxState.DELIVERED.value, OutboxState.UNDELIVERABLE.value})


def may_have_left(conn: Connection, item: OutboxItem) -> bool:
    """True when the SMSC may have this message: a reversal then needs a
    notice.  EXPIRED is both the SMSC's verdict on a sent message (it has
    parts) and the local expiry of one never submitted (none)."""
    if item.state in _MAYBE_LEFT:
        return True
    if item.state == OutboxState.EXPIRED.value:
        return conn.execute(select(sms_outbox_parts.c.id).where(sms_outbox_parts.c.outbox_id == item.id)
                            .limit(1)).first() is not None
    return False
