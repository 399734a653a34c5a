"""Reading the stores for the audit (blocking): the journal's tables in one
read snapshot, and each biller's ledger through its adapter -- the
adapter kind's ``read_ledger`` (billing_adapters/registry.py), so a new kind
of biller is audited with no change here."""
from __future__ import annotations

import datetime as _dt

from typing import Callable

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine

from billgw.billing_adapters.interface import LedgerEntry
from billgw.billing_adapters.registry import ledger_kinds, ledger_reader
from billgw.sms.outbox import sms_outbox

from ..schema import biller_outbox, reversals, transactions
from .rows import BillerOutboxRow, JournalRow, JournalSnapshot, ReversalRow, SmsRow

def _epoch(value) -> float | None:
    """A journal timestamp (naive UTC) as epoch seconds."""
    if value is None:
        return None
    return value.replace(tzinfo=_dt.timezone.utc).timestamp()


def make_audit_engine(url: str) -> Engine:
    """An engine for reading the journal while the gateway runs.

    SQLite: a plain deferred ``BEGIN`` is a consistent read snapshot under
    WAL without taking the write lock (the gateway's own engine begins with
    ``BEGIN IMMEDIATE``, which would stall its writers for the whole read),
    and ``query_only`` guarantees the audit never writes.  PostgreSQL gets
    its snapshot from :func:`load_journal`'s REPEATABLE READ transaction.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def load_journal(engine: Engine) -> JournalSnapshot:
    """Read the four tables in one read transaction, so that a payment, its
    SMS rows and its outbox items are seen as of the same moment (otherwise
    a payment confirmed between two SELECTs would look like a broken one).

    Read the journal *before* the ledgers: the gateway confirms only after
    the biller posted, so a payment CONFIRMED in the snapshot is already in
    a ledger read later.  One race remains: a payment reversed between the
    two reads looks CONFIRMED here and reversed at the biller, so a
    ``confirmed_missing_at_biller`` on a busy system is worth a second run.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            t = transactions
            txns = tuple(
                JournalRow(id=r.id, kind=r.kind, state=r.state, amount=r.amount, biller_code=r.biller_code,
                           currency=r.currency, masked_pan=r.masked_pan, msisdn=r.msisdn,
                           acquirer_id=r.acquirer_id, terminal_id=r.terminal_id, stan=r.stan,
                           transmission_dt=r.transmission_dt, rrn=r.rrn, biller_receipt=r.biller_receipt,
                           advice_received=bool(r.advice_received),
                           reversal_requested=bool(r.reversal_requested), service_code=r.service_code,
                           billing_number=r.billing_number, local_problem=r.local_problem,
                           updated_at=_epoch(r.updated_at))
                for r in conn.execute(select(
                    t.c.id, t.c.kind, t.c.state, t.c.amount, t.c.biller_code, t.c.currency, t.c.masked_pan,
                    t.c.msisdn, t.c.acquirer_id, t.c.terminal_id, t.c.stan, t.c.transmission_dt, t.c.rrn,
                    t.c.biller_receipt, t.c.advice_received, t.c.reversal_requested, t.c.service_code,
                    t.c.billing_number, t.c.local_problem, t.c.updated_at)
                    .order_by(t.c.created_at, t.c.id)))
            s = sms_outbox
            sms = tuple(
                SmsRow(id=r.id, payment_id=r.payment_id, kind=r.kind, state=r.state, attempts=r.attempts)
                for r in conn.execute(select(s.c.id, s.c.payment_id, s.c.kind, s.c.state, s.c.attempts)
                                      .order_by(s.c.id)))
            rv = reversals
            revs = tuple(
                ReversalRow(id=r.id, transaction_id=r.transaction_id, state=r.state, amount=r.amount,
                            orig_acquirer_id=r.orig_acquirer_id, orig_terminal_id=r.orig_terminal_id,
                            orig_stan=r.orig_stan, orig_transmission_dt=r.orig_transmission_dt,
                            currency=r.currency)
                for r in conn.execute(select(
                    rv.c.id, rv.c.transaction_id, rv.c.state, rv.c.amount, rv.c.orig_acquirer_id,
                    rv.c.orig_terminal_id, rv.c.orig_stan, rv.c.orig_transmission_dt, rv.c.currency)
                    .order_by(rv.c.id)))
            b = biller_outbox
            items = tuple(
                BillerOutboxRow(id=r.id, transaction_id=r.transaction_id, action=r.action, state=r.state,
                                attempts=r.attempts, last_error=r.last_error)
                for r in conn.execute(select(b.c.id, b.c.transaction_id, b.c.action, b.c.state,
                                             b.c.attempts, b.c.last_error).order_by(b.c.id)))
    return JournalSnapshot(txns, sms, revs, items)


LedgerReader = Callable[[str | None], list[LedgerEntry]]
# Kept for callers that look a reader up by kind: each takes the biller's
# adapter settings and returns its ledger reader.
LEDGER_READERS: dict[str, Callable[[dict], LedgerReader]] = {
    kind: (lambda settings, kind=kind: ledger_reader(kind, settings)) for kind in ledger_kinds()
}


def biller_ledger_reader(biller) -> LedgerReader | None:
    """The ledger reader of a configured biller (``BillerSettings``), or
    None when its adapter kind cannot read a ledger.  Raises the registry's
    AdapterConfigError (naming the key) when its settings are wrong."""
    if biller.adapter not in LEDGER_READERS:
        return None
    return ledger_reader(biller.adapter, dict(biller.adapter_settings))
