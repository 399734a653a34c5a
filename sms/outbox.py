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
import enum
from dataclasses import dataclass, replace

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UnicodeText,
    UniqueConstraint,
    bindparam,
    case,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

metadata = MetaData()


class OutboxState(enum.Enum):
    WAITING = "WAITING"  # payment not yet confirmed by a batch-posting biller
    QUEUED = "QUEUED"  # due for sending
    SENDING = "SENDING"  # claimed by a sender under a lease
    SENT = "SENT"  # accepted by the SMSC (message ids recorded)
    FAILED = "FAILED"  # last attempt failed; retried at next_attempt_at
    ABANDONED = "ABANDONED"  # gave up; a person looks at it
    CANCELLED = "CANCELLED"  # the payment was reversed before its SMS left
    UNCERTAIN = "UNCERTAIN"  # its sender died mid-submit: maybe sent; never resent


class OutboxKind(enum.Enum):
    RECEIPT = "receipt"
    REVERSAL_NOTICE = "reversal_notice"


sms_outbox = Table(
    "sms_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(40), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("msisdn", String(20), nullable=False),
    Column("language", String(5), nullable=False),
    Column("text", UnicodeText, nullable=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("lease_until", DateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("smsc_message_ids", String(400), nullable=True),
    Column("data_coding", Integer, nullable=True),
    Column("parts", Integer, nullable=True),
    Column("last_error", String(400), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # Exactly one receipt (and one reversal notice) per payment, enforced by
    # the database rather than by process memory.
    UniqueConstraint("payment_id", "kind", name="uq_sms_outbox_payment_kind"),
)


def utc(seconds: float) -> _dt.datetime:
    """A naive UTC datetime from a clock reading (``IReactorTime.seconds()``)."""
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).replace(tzinfo=None)


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
    smsc_message_ids: str | None = None


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
        smsc_message_ids=row.smsc_message_ids,
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
        "state": state.value, "attempts": 0, "next_attempt_at": at, "created_at": at, "updated_at": at})
    return result.inserted_primary_key[0]


# Built once: every confirmed payment runs these (see gateway/journal.py).
_EXISTING = select(sms_outbox.c.id).where(sms_outbox.c.payment_id == bindparam("b_payment"),
                                          sms_outbox.c.kind == bindparam("b_kind"))
_INSERT = sms_outbox.insert()


_CLAIMABLE = (OutboxState.QUEUED.value, OutboxState.FAILED.value)


def claim_for_submit(
    conn: Connection, *, now: float, owner: str, lease_seconds: float, limit: int
) -> list[OutboxItem]:
    """Claim up to ``limit`` due messages and mark them SENDING, in one statement pair.

    What the windowed sender uses: the rows go to the SMPP link at once (its
    window holds them), so a separate reservation before each submit_sm
    would only cost a transaction per receipt.  The price: a sender that
    dies leaves at most one window of rows UNCERTAIN (never resent), instead
    of only the one in mid-submit.  A SENDING row whose lease expired (its
    sender died) becomes UNCERTAIN here instead of being sent again; on
    PostgreSQL the rows are selected ``FOR UPDATE SKIP LOCKED`` so that
    several gateway processes never claim the same row.
    """
    at = utc(now)
    _expire_dead_senders(conn, at)
    query = _DUE_FOR_UPDATE if conn.dialect.name == "postgresql" else _DUE
    rows = conn.execute(query, {"b_at": at, "b_limit": limit}).all()
    if not rows:
        return []
    conn.execute(_CLAIM, {"b_ids": [r.id for r in rows], "b_sending": OutboxState.SENDING.value,
                          "b_lease": utc(now + lease_seconds), "b_owner": owner, "b_at": at})
    return [replace(_item(r), attempts=r.attempts + 1, state=OutboxState.SENDING.value) for r in rows]


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
    writing it: the attempt is given back).
    """

    item_id: int
    state: OutboxState
    message_ids: tuple[str, ...] = ()
    data_coding: int | None = None
    parts: int | None = None
    error: str | None = None
    retry_at: float | None = None


def record_outcomes(conn: Connection, outcomes: list[Outcome], *, owner: str, now: float) -> list[bool]:
    """Record many rows' outcomes in the caller's one transaction.

    Each update holds only if the row is still SENDING under ``owner`` (its
    lease may have been lost meanwhile); returns one flag per outcome.
    """
    t = sms_outbox
    at = utc(now)
    done = []
    for o in outcomes:
        values = dict(state=o.state.value, lease_until=None, updated_at=at, last_error=(o.error or None) and o.error[:400])
        if o.state is OutboxState.SENT or o.message_ids:
            values.update(smsc_message_ids=",".join(o.message_ids)[:400] or None)
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
        if o.state is OutboxState.QUEUED:  # SQL expressions: built for the rare hand-back
            result = conn.execute(
                update(t).where(t.c.id == o.item_id, t.c.state == OutboxState.SENDING.value,
                                t.c.lease_owner == owner).values(**values)
            )
        else:
            result = conn.execute(_RECORD, {"b_id": o.item_id, "b_owner": owner, **values})
        done.append(result.rowcount == 1)
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
