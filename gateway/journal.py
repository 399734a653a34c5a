"""The journal: every accepted 0200 and its outcome, one transaction per step.

The functions here take an open Connection (they run inside
:class:`~billgw.gateway.db.DatabasePool` transactions, or synchronously in
CLI tools) and return frozen dataclasses.  :class:`Journal` is the
reactor-side face: the same operations as Deferreds.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from typing import Mapping

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .schema import transaction_events, transactions
from billgw.sms.outbox import utc  # one clock-to-column conversion for every table

from .states import IllegalTransition, State, check_transition, sources_of


@dataclass(frozen=True)
class NewTransaction:
    """What the processor knows of a request when it first journals it."""

    id: str
    kind: str
    mti: str
    processing_code: str
    acquirer_id: str
    forwarder_id: str | None
    terminal_id: str
    stan: str
    transmission_dt: str
    rrn: str
    fingerprint: str
    masked_pan: str | None
    amount: int
    currency: str
    fee: int
    biller_code: str | None
    service_code: str | None
    billing_number: str | None
    bill_number: str | None
    msisdn: str | None
    language: str | None
    # The local rule the request breaks (an Outcome name), decided when it
    # was journaled: an advice for it must never be posted (see machine.py).
    local_problem: str | None = None


@dataclass(frozen=True)
class TransactionView:
    id: str
    kind: str
    state: State
    fingerprint: str
    amount: int
    currency: str
    fee: int
    biller_code: str | None
    service_code: str | None
    billing_number: str | None
    bill_number: str | None
    msisdn: str | None
    language: str | None
    masked_pan: str | None
    rrn: str
    stan: str
    terminal_id: str
    acquirer_id: str
    response_code: str | None
    response: tuple[str, dict[str, str]] | None  # (mti, fields) of the answer given
    auth_code: str | None
    biller_receipt: str | None
    settlement_date: str | None
    created_at: _dt.datetime
    detail: str | None
    reversal_requested: bool = False
    advice_received: bool = False
    advice_response: str | None = None
    local_problem: str | None = None


@dataclass(frozen=True)
class Recorded:
    """Outcome of :func:`record_received`: new, or the existing duplicate."""

    view: TransactionView
    is_new: bool


def _view(row) -> TransactionView:
    response = None
    if row.response_fields:
        stored = json.loads(row.response_fields)
        response = (stored["mti"], stored["fields"])
    return TransactionView(
        id=row.id, kind=row.kind, state=State(row.state), fingerprint=row.fingerprint,
        amount=row.amount, currency=row.currency, fee=row.fee, biller_code=row.biller_code,
        service_code=row.service_code, billing_number=row.billing_number,
        bill_number=row.bill_number, msisdn=row.msisdn, language=row.language,
        masked_pan=row.masked_pan, rrn=row.rrn, stan=row.stan, terminal_id=row.terminal_id,
        acquirer_id=row.acquirer_id, response_code=row.response_code, response=response,
        auth_code=row.auth_code, biller_receipt=row.biller_receipt,
        settlement_date=row.settlement_date, created_at=row.created_at, detail=row.detail,
        reversal_requested=bool(row.reversal_requested), advice_received=bool(row.advice_received),
        advice_response=row.advice_response, local_problem=row.local_problem,
    )


def get(conn: Connection, txn_id: str) -> TransactionView | None:
    row = conn.execute(select(transactions).where(transactions.c.id == txn_id)).first()
    return _view(row) if row else None


def lock_acquirer_keys(conn: Connection, acquirer_id: str, terminal_id: str, stan: str,
                       transmission_dt: str) -> None:
    """Serialise, until this transaction ends, every writer that looks up or
    journals anything under these acquirer keys (F32 + F41 + F11 + F7).

    A 0200, its 0220 advice and its 0420 reversal live in two tables
    (``transactions`` and ``reversals``) that no single UNIQUE key spans, so
    under READ COMMITTED two of them in flight at once would each miss the
    other: the reversal recorded NOT_FOUND and acknowledged while the
    original goes on to be posted.  Every path that journals under a set of
    keys takes this lock first; whichever comes second then sees the first.

    PostgreSQL: a transaction-level advisory lock on a 64-bit hash of the
    keys, which holds across every gateway process sharing the database (a
    hash collision only serialises two unrelated requests a little).
    SQLite: nothing to do -- its transactions begin ``IMMEDIATE`` and hold
    the one database write lock until they end.
    """
    if conn.dialect.name != "postgresql":
        return
    basis = "\x1f".join((acquirer_id, terminal_id, stan, transmission_dt)).encode("utf-8")
    key = int.from_bytes(hashlib.blake2b(basis, digest_size=8).digest(), "big", signed=True)
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def find_by_keys(conn: Connection, acquirer_id: str, terminal_id: str, stan: str,
                 transmission_dt: str) -> TransactionView | None:
    t = transactions
    row = conn.execute(select(t).where(
        t.c.acquirer_id == acquirer_id, t.c.terminal_id == terminal_id,
        t.c.stan == stan, t.c.transmission_dt == transmission_dt)).first()
    return _view(row) if row else None


def record_received(conn: Connection, new: NewTransaction, now: float, *, reversal_requested: bool = False,
                    advice_received: bool = False, state: State = State.RECEIVED,
                    looked_up: bool = False) -> Recorded:
    """Journal a request, or return the one already journaled under its keys.

    The UNIQUE constraint on the acquirer keys decides: of two racing
    inserts (two processes, or a repeat during the first), exactly one wins.
    ``state`` is RECEIVED, or POSTING for a payment that is sent to its
    biller right after this commit (one durable trip fewer on the approved
    path; a crash before the call then leaves it POSTING, which recovery
    settles by a status query -- never by posting it blindly).
    ``looked_up``: the caller has just found no row under these keys.
    """
    if state not in (State.RECEIVED, State.POSTING):
        raise ValueError(f"a request is journaled RECEIVED or POSTING, not {state.value}")
    if not looked_up:
        existing = find_by_keys(conn, new.acquirer_id, new.terminal_id, new.stan, new.transmission_dt)
        if existing is not None:
            return Recorded(existing, False)
    at = utc(now)
    try:
        with conn.begin_nested():
            row = conn.execute(insert(transactions).values(
                **new.__dict__, state=state.value, reversal_requested=reversal_requested,
                advice_received=advice_received, created_at=at, updated_at=at)
                .returning(*transactions.c)).one()
            conn.execute(insert(transaction_events).values(
                transaction_id=new.id, from_state=None, to_state=state.value, at=at))
    except IntegrityError:
        existing = find_by_keys(conn, new.acquirer_id, new.terminal_id, new.stan, new.transmission_dt)
        if existing is None:
            raise
        return Recorded(existing, False)
    return Recorded(_view(row), True)


def transition(conn: Connection, txn_id: str, new: State, now: float, *, detail: str | None = None,
               response: tuple[str, Mapping[str, str]] | None = None, **values) -> TransactionView:
    """Move a transaction to ``new`` (checked), recording the event.

    The UPDATE is guarded by the allowed source states, so two racing
    writers cannot both move it.  Raises IllegalTransition otherwise.
    """
    current = get(conn, txn_id)
    if current is None:
        raise KeyError(txn_id)
    check_transition(current.state, new)
    at = utc(now)
    if response is not None:
        mti, fields = response
        values["response_fields"] = json.dumps({"mti": mti, "fields": dict(fields)}, sort_keys=True)
        values["response_code"] = fields.get("39")
    if detail is not None:
        values["detail"] = detail[:400]
    result = conn.execute(
        update(transactions)
        .where(transactions.c.id == txn_id,
               transactions.c.state.in_([s.value for s in sources_of(new)]))
        .values(state=new.value, updated_at=at, **values)
    )
    if result.rowcount != 1:
        raise IllegalTransition(f"{txn_id} changed state concurrently")
    conn.execute(insert(transaction_events).values(
        transaction_id=txn_id, from_state=current.state.value, to_state=new.value, at=at,
        detail=detail[:400] if detail else None))
    return get(conn, txn_id)


def events(conn: Connection, txn_id: str) -> list[tuple[str | None, str, _dt.datetime, str | None]]:
    e = transaction_events
    rows = conn.execute(select(e).where(e.c.transaction_id == txn_id).order_by(e.c.id)).all()
    return [(r.from_state, r.to_state, r.at, r.detail) for r in rows]


def list_all(conn: Connection) -> list[TransactionView]:
    rows = conn.execute(select(transactions).order_by(transactions.c.created_at)).all()
    return [_view(r) for r in rows]


class Journal:
    """The journal operations as Deferreds, on the database pool."""

    def __init__(self, pool):
        self._pool = pool

    def run(self, fn, *args, **kwargs):
        return self._pool.run(fn, *args, **kwargs)

    def transition(self, txn_id: str, new: State, now: float, **kwargs):
        return self._pool.run(transition, txn_id, new, now, **kwargs)

    def get(self, txn_id: str):
        return self._pool.run(get, txn_id)
