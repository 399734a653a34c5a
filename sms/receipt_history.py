"""A receipt's whole history, and an operator's resend of it.

Plain functions over an open connection, dataclasses out (the CLI renders
them; nothing here knows of payments beyond their id).

**Resend is an operator's act, never the sender's.**  It is how a person
settles an UNCERTAIN receipt, or answers a subscriber who says the SMS never
came.  It may give the subscriber a second copy -- that is the point, and
why it is recorded with who asked and why (``sms_outbox_events``).  The row
goes back to QUEUED with a fresh attempt budget and a fresh expiry clock;
its earlier parts and receipts stay (``resend_no`` tells them apart).
Refused while the row is with a sender (SENDING) or already due (QUEUED,
WAITING), or CANCELLED (the payment was reversed).  Whether the *payment*
allows a receipt at all is the caller's check.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from billgw.sms.outbox import (
    OutboxKind,
    OutboxState,
    sms_outbox,
    sms_outbox_events,
    sms_outbox_parts,
    utc,
)

RESENDABLE = frozenset({OutboxState.SENT.value, OutboxState.DELIVERED.value, OutboxState.UNDELIVERABLE.value,
                        OutboxState.EXPIRED.value, OutboxState.UNCERTAIN.value, OutboxState.ABANDONED.value,
                        OutboxState.FAILED.value})
_WHY_NOT = {
    OutboxState.SENDING.value: "it is being sent right now; look again in a minute",
    OutboxState.QUEUED.value: "it is already queued to be sent",
    OutboxState.WAITING.value: "it waits for the biller to record the payment",
    OutboxState.CANCELLED.value: "it was cancelled because the payment was reversed",
}


class ResendRefused(Exception):
    """The resend cannot be done; the message says why, for the operator."""


@dataclass(frozen=True)
class PartView:
    resend_no: int
    attempt: int
    part_number: int
    smsc: str | None
    message_id: str
    submitted_at: _dt.datetime
    dlr_stat: str | None
    dlr_error: str | None
    dlr_done_at: _dt.datetime | None
    dlr_at: _dt.datetime | None


@dataclass(frozen=True)
class EventView:
    at: _dt.datetime
    event: str
    from_state: str | None
    to_state: str | None
    actor: str
    detail: str | None


@dataclass(frozen=True)
class MessageHistory:
    id: int
    payment_id: str
    kind: str
    msisdn: str
    language: str
    state: str
    attempts: int
    resends: int
    parts_expected: int | None
    data_coding: int | None
    last_error: str | None
    created_at: _dt.datetime
    queued_at: _dt.datetime
    updated_at: _dt.datetime
    next_attempt_at: _dt.datetime
    text: str
    parts: tuple[PartView, ...]
    events: tuple[EventView, ...]


def history(conn: Connection, payment_id: str) -> list[MessageHistory]:
    """Every SMS row of the payment (receipt, reversal notice) with its parts and events."""
    t, p, e = sms_outbox, sms_outbox_parts, sms_outbox_events
    out = []
    for row in conn.execute(select(t).where(t.c.payment_id == payment_id).order_by(t.c.id)).all():
        parts = conn.execute(select(p).where(p.c.outbox_id == row.id)
                             .order_by(p.c.resend_no, p.c.attempt, p.c.part_number)).all()
        events = conn.execute(select(e).where(e.c.outbox_id == row.id).order_by(e.c.at, e.c.id)).all()
        out.append(MessageHistory(
            id=row.id, payment_id=row.payment_id, kind=row.kind, msisdn=row.msisdn, language=row.language,
            state=row.state, attempts=row.attempts, resends=row.resends, parts_expected=row.parts,
            data_coding=row.data_coding, last_error=row.last_error, created_at=row.created_at,
            queued_at=row.queued_at, updated_at=row.updated_at, next_attempt_at=row.next_attempt_at, text=row.text,
            parts=tuple(PartView(x.resend_no, x.attempt, x.part_number, x.smsc, x.message_id, x.submitted_at,
                                 x.dlr_stat, x.dlr_error, x.dlr_done_at, x.dlr_at) for x in parts),
            events=tuple(EventView(x.at, x.event, x.from_state, x.to_state, x.actor, x.detail) for x in events),
        ))
    return out


def resend(conn: Connection, payment_id: str, *, actor: str, reason: str, now: float) -> tuple[int, str]:
    """Queue the payment's receipt again; returns (outbox id, the state it left).

    Raises :class:`ResendRefused` naming why not.  The update is
    conditional on the state read, so a sender claiming the row meanwhile
    makes this fail rather than resend a message in flight.
    """
    actor, reason = actor.strip(), reason.strip()
    if not actor or not reason:
        raise ResendRefused("a resend needs who asks (--operator) and why (--reason)")
    t = sms_outbox
    query = select(t.c.id, t.c.state, t.c.attempts).where(
        t.c.payment_id == payment_id, t.c.kind == OutboxKind.RECEIPT.value)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise ResendRefused(f"payment {payment_id} has no receipt SMS (no phone number was given?)")
    if row.state not in RESENDABLE:
        raise ResendRefused(f"the receipt of {payment_id} is {row.state}: "
                            f"{_WHY_NOT.get(row.state, 'it cannot be resent')}")
    at = utc(now)
    result = conn.execute(update(t).where(t.c.id == row.id, t.c.state == row.state).values(
        state=OutboxState.QUEUED.value, attempts=0, resends=t.c.resends + 1, next_attempt_at=at, queued_at=at,
        lease_until=None, lease_owner=None, last_error=None, updated_at=at))
    if result.rowcount != 1:
        raise ResendRefused(f"the receipt of {payment_id} changed state meanwhile; look again")
    conn.execute(sms_outbox_events.insert().values(
        outbox_id=row.id, at=at, event="RESEND", from_state=row.state, to_state=OutboxState.QUEUED.value,
        actor=actor[:64], detail=f"{reason} (after {row.attempts} attempt(s))"[:400]))
    return row.id, row.state
