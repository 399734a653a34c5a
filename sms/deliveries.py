"""Delivery receipts into the outbox: a part's receipt, then its message's state.

:func:`record_deliveries` runs in the caller's transaction (on the DB pool,
like the rest of :mod:`billgw.sms.outbox`).  For each receipt it finds the
part by message id -- the exact key first, then the other base's reading
(:func:`billgw.sms.dlr.candidate_keys`), within the SMSC that sent it --
records the receipt on the part, and derives the row's state from all the
parts of the row's latest submission (:func:`billgw.sms.dlr.combine`).

A part's first *final* receipt stands: SMSCs repeat receipts, and a repeat
must not turn DELIVERED into something else.  A receipt whose id matches no
part is returned as unmatched; the caller decides whether to hold it (its
submit_sm_resp may not be recorded yet) or give up on it.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection

from billgw.sms.dlr import FINAL, DeliveryReceipt, candidate_keys, combine, message_key
from billgw.sms.outbox import OutboxState, sms_outbox, sms_outbox_parts, utc

# Row states a receipt may still move: SENT, or a receipt-derived final
# state (a late UNDELIV for another part of a message still decides).
_RECEIPT_STATES = frozenset({OutboxState.SENT.value, OutboxState.DELIVERED.value,
                             OutboxState.UNDELIVERABLE.value, OutboxState.EXPIRED.value})


@dataclass(frozen=True)
class IncomingReceipt:
    smsc: str | None  # the SMSC connection's name (None: match any)
    receipt: DeliveryReceipt
    received_at: float


@dataclass(frozen=True)
class DeliveryResult:
    matched: bool
    outbox_id: int | None = None
    part_number: int | None = None
    row_state: str | None = None  # the row's state after this receipt
    duplicate: bool = False  # the part already had a final receipt


def _find_part(conn: Connection, incoming: IncomingReceipt):
    keys = candidate_keys(incoming.receipt.message_id)
    if not keys:
        return None
    p = sms_outbox_parts
    query = select(p).where(p.c.message_key.in_(keys))
    if incoming.smsc is not None:
        query = query.where(p.c.smsc == incoming.smsc)
    rows = conn.execute(query.order_by(p.c.id.desc())).all()
    if not rows:
        return None
    exact = message_key(incoming.receipt.message_id)
    for row in rows:
        if row.message_key == exact:
            return row
    return rows[0]


def record_deliveries(conn: Connection, receipts: list[IncomingReceipt]) -> list[DeliveryResult]:
    p, t = sms_outbox_parts, sms_outbox
    results = []
    for incoming in receipts:
        part = _find_part(conn, incoming)
        if part is None:
            results.append(DeliveryResult(False))
            continue
        receipt = incoming.receipt
        # The row first, locked: receipts for two parts of one message may be
        # recorded at once by two processes (each holding a bind of the
        # account); each must see the other's part, or both would leave the
        # row SENT.  (SQLite serialises writers anyway.)
        row_query = select(t.c.state, t.c.parts).where(t.c.id == part.outbox_id)
        if conn.dialect.name == "postgresql":
            row_query = row_query.with_for_update()
        row = conn.execute(row_query).one()
        part = conn.execute(select(p).where(p.c.id == part.id)).one()  # as it is now, under the lock
        duplicate = part.dlr_stat in FINAL
        if not duplicate:
            conn.execute(update(p).where(p.c.id == part.id).values(
                dlr_stat=receipt.stat, dlr_error=(receipt.error or None) and receipt.error[:10],
                dlr_done_at=receipt.done_at, dlr_at=utc(incoming.received_at)))
        state = row.state
        latest = conn.execute(
            select(p.c.resend_no, p.c.attempt).where(p.c.outbox_id == part.outbox_id)
            .order_by(p.c.resend_no.desc(), p.c.attempt.desc()).limit(1)).one()
        current = (part.resend_no, part.attempt) == (latest.resend_no, latest.attempt)
        if not duplicate and current and state in _RECEIPT_STATES:
            stats = conn.execute(
                select(p.c.dlr_stat).where(and_(p.c.outbox_id == part.outbox_id, p.c.resend_no == part.resend_no,
                                                p.c.attempt == part.attempt))
                .order_by(p.c.part_number)).scalars().all()
            derived = combine(list(stats), row.parts or len(stats))
            if derived is not None and derived != state:
                conn.execute(update(t).where(t.c.id == part.outbox_id, t.c.state.in_(_RECEIPT_STATES)).values(
                    state=derived, updated_at=utc(incoming.received_at),
                    last_error=None if derived == "DELIVERED" else
                    f"part {part.part_number}: {receipt.stat}" + (f" err:{receipt.error}" if receipt.error else "")))
                state = derived
        results.append(DeliveryResult(True, part.outbox_id, part.part_number, state, duplicate))
    return results
