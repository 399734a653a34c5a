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

from sqlalchemy import bindparam, select, update
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
    if incoming.smsc is None:
        rows = conn.execute(_PARTS_BY_KEY, {"b_keys": list(keys)}).all()
    else:
        rows = conn.execute(_PARTS_BY_KEY_AND_SMSC, {"b_keys": list(keys), "b_smsc": incoming.smsc}).all()
    if not rows:
        return None
    exact = message_key(incoming.receipt.message_id)
    for row in rows:
        if row.message_key == exact:
            return row
    return rows[0]


# Built once (with bind parameters): receipts come one per part, so these
# run for nearly every SMS sent; building them per call was a third of the
# gateway's CPU under load (docs/performance.md).
_p, _t = sms_outbox_parts, sms_outbox
_PARTS_BY_KEY = (select(_p).where(_p.c.message_key.in_(bindparam("b_keys", expanding=True)))
                 .order_by(_p.c.id.desc()))
_PARTS_BY_KEY_AND_SMSC = (select(_p).where(_p.c.message_key.in_(bindparam("b_keys", expanding=True)),
                                           _p.c.smsc == bindparam("b_smsc"))
                          .order_by(_p.c.id.desc()))
_ROW = select(_t.c.state, _t.c.parts).where(_t.c.id == bindparam("b_outbox"))
_ROW_FOR_UPDATE = _ROW.with_for_update()
# Every part of every submission of the row: the part as it is now (under
# the row's lock), the latest submission and its parts' receipts, in one read.
_ROW_PARTS = select(_p).where(_p.c.outbox_id == bindparam("b_outbox"))
_RECORD_PART = (update(_p).where(_p.c.id == bindparam("b_part"))
                .values(dlr_stat=bindparam("b_stat"), dlr_error=bindparam("b_error"),
                        dlr_done_at=bindparam("b_done_at"), dlr_at=bindparam("b_dlr_at")))
_DERIVE_ROW = (update(_t).where(_t.c.id == bindparam("b_outbox"), _t.c.state.in_(_RECEIPT_STATES))
               .values(state=bindparam("b_state"), updated_at=bindparam("b_at"), last_error=bindparam("b_last_error")))


def record_deliveries(conn: Connection, receipts: list[IncomingReceipt]) -> list[DeliveryResult]:
    row_query = _ROW_FOR_UPDATE if conn.dialect.name == "postgresql" else _ROW
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
        row = conn.execute(row_query, {"b_outbox": part.outbox_id}).one()
        parts = conn.execute(_ROW_PARTS, {"b_outbox": part.outbox_id}).all()  # as they are now, under the lock
        part = next(x for x in parts if x.id == part.id)
        duplicate = part.dlr_stat in FINAL
        if not duplicate:
            conn.execute(_RECORD_PART, {"b_part": part.id, "b_stat": receipt.stat,
                                        "b_error": (receipt.error or None) and receipt.error[:10],
                                        "b_done_at": receipt.done_at, "b_dlr_at": utc(incoming.received_at)})
        state = row.state
        latest = max((x.resend_no, x.attempt) for x in parts)
        current = (part.resend_no, part.attempt) == latest
        if not duplicate and current and state in _RECEIPT_STATES:
            stats = [receipt.stat if x.id == part.id else x.dlr_stat
                     for x in sorted(parts, key=lambda x: x.part_number)
                     if (x.resend_no, x.attempt) == latest]
            derived = combine(stats, row.parts or len(stats))
            if derived is not None and derived != state:
                conn.execute(_DERIVE_ROW, {
                    "b_outbox": part.outbox_id, "b_state": derived, "b_at": utc(incoming.received_at),
                    "b_last_error": None if derived == "DELIVERED" else
                    f"part {part.part_number}: {receipt.stat}" + (f" err:{receipt.error}" if receipt.error else "")})
                state = derived
        results.append(DeliveryResult(True, part.outbox_id, part.part_number, state, duplicate))
    return results
