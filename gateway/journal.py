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

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .prepared import Prepared
from .schema import transaction_events, transactions
from billgw.sms.outbox import utc  # one clock-to-column conversion for every table

from .states import State

# The statements of the hot path, built once with bind parameters: SQLAlchemy
# then finds each one's compiled form by a cache key memoised on the
# statement object, instead of building, hashing and compiling a fresh
# statement on every call (the profile in docs/performance.md).
_t = transactions
BY_ID = select(_t).where(_t.c.id == bindparam("b_id"))
# The row lock for a decision (PostgreSQL; SQLite renders no FOR UPDATE: its
# writers are serialised by BEGIN IMMEDIATE).
BY_ID_FOR_UPDATE = BY_ID.with_for_update()
_BY_KEYS = select(_t).where(
    _t.c.acquirer_id == bindparam("b_acquirer"), _t.c.terminal_id == bindparam("b_terminal"),
    _t.c.stan == bindparam("b_stan"), _t.c.transmission_dt == bindparam("b_dt"))
_INSERT = insert(_t).returning(*_t.c)
INSERT_EVENT = insert(transaction_events)
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
# The same, run on the DB-API cursor (prepared.py): SQLAlchemy's execution
# path per statement was the largest CPU item left on the approved path.
P_BY_ID = Prepared(BY_ID)
P_BY_ID_FOR_UPDATE = Prepared(BY_ID_FOR_UPDATE)
_P_BY_KEYS = Prepared(_BY_KEYS)
_P_INSERT = Prepared(_INSERT, keyed=True)
P_INSERT_EVENT = Prepared(INSERT_EVENT, keyed=True)
_P_ADVISORY_LOCK = Prepared(_ADVISORY_LOCK)


def keys_params(acquirer_id: str, terminal_id: str, stan: str, transmission_dt: str) -> dict[str, str]:
    """The bind parameters of a look-up by acquirer keys."""
    return {"b_acquirer": acquirer_id, "b_terminal": terminal_id, "b_stan": stan, "b_dt": transmission_dt}


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
    # The business date (YYYYMMDD) by the schedule and the biller's cut-off;
    # journaling raises it to the last cut-over's (gateway/business_day.py).
    business_date: str | None = None
    fee_bearer: str | None = None  # who bears ``fee``: customer | biller
    # HMAC-SHA-256 of the PAN (docs/security.md), None without the key.
    pan_hash: str | None = None


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
    business_date: str | None = None  # YYYYMMDD, decided when journaled
    surcharge: int = 0  # the late surcharge the payment settled (within amount)
    fee_bearer: str | None = None


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
        business_date=row.business_date, surcharge=row.surcharge or 0, fee_bearer=row.fee_bearer,
    )


def get(conn: Connection, txn_id: str) -> TransactionView | None:
    row = P_BY_ID.first(conn, {"b_id": txn_id})
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
    _P_ADVISORY_LOCK.execute(conn, {"key": key})


def find_by_keys(conn: Connection, acquirer_id: str, terminal_id: str, stan: str,
                 transmission_dt: str) -> TransactionView | None:
    row = _P_BY_KEYS.first(conn, keys_params(acquirer_id, terminal_id, stan, transmission_dt))
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
    ``looked_up``: the caller holds the keys' lock and has just found no
    row under them.
    """
    if state not in (State.RECEIVED, State.POSTING):
        raise ValueError(f"a request is journaled RECEIVED or POSTING, not {state.value}")
    if not looked_up:
        existing = find_by_keys(conn, new.acquirer_id, new.terminal_id, new.stan, new.transmission_dt)
        if existing is not None:
            return Recorded(existing, False)
    at = utc(now)
    values = dict(new.__dict__, state=state.value, reversal_requested=reversal_requested,
                  advice_received=advice_received, created_at=at, updated_at=at)
    event = {"transaction_id": new.id, "from_state": None, "to_state": state.value, "at": at, "detail": None}
    if looked_up:
        # The caller holds the keys' lock (lock_acquirer_keys) and found no
        # row: nothing can insert these keys before this transaction ends,
        # so no savepoint is needed to survive a lost race.
        row = _P_INSERT.one(conn, values)
        P_INSERT_EVENT.execute(conn, event)
        return Recorded(_view(row), True)
    try:
        with conn.begin_nested():
            row = conn.execute(_INSERT, values).one()
            conn.execute(INSERT_EVENT, event)
    except IntegrityError:
        existing = find_by_keys(conn, new.acquirer_id, new.terminal_id, new.stan, new.transmission_dt)
        if existing is None:
            raise
        return Recorded(existing, False)
    return Recorded(_view(row), True)


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
        """A write for what is already journaled: never refused."""
        return self._pool.run(fn, *args, **kwargs)

    def admit(self, fn, *args, **kwargs):
        """A write that journals new work: fails with ``JournalBusy``, nothing
        written, while the journal's queue is full (back-pressure)."""
        return self._pool.admit(fn, *args, **kwargs)

    def get(self, txn_id: str):
        """The committed row, read beside the writer, never behind it."""
        return self._pool.read(get, txn_id)
