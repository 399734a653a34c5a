"""The water biller simulator: the biller's own tables, and its batch.

A real database biller is a database and a batch job; so is this.
:class:`WaterBillerSim` creates and seeds the biller's tables (named by a
mapping, :data:`SIM_MAPPING` by default: the legacy names a utility's
schema has) in any database SQLAlchemy reaches, and runs the biller's batch
-- which books each pending intake row (receipt number, the bill's amount
due lowered) or rejects it (unknown bill, bill no longer payable) -- on
demand (:meth:`WaterBillerSim.run_batch`, ``billgw water-sim --batch-now``)
or on a schedule (``billgw water-sim --batch-interval S``).

It is blocking code: the CLI runs it in its own process, tests and the demo
in a thread.  One misbehaviour per subclass, as the gateway meets them:

| Class (``--behaviour``) | What the biller does |
|---|---|
| :class:`RejectingWaterBiller` (``rejects``) | its batch rejects every row |
| :class:`SlowWaterBiller` (``slow``) | its batch holds the tables locked (:meth:`~SlowWaterBiller.locked`) |
| :class:`DownWaterBiller` (``down``) | its database cannot be reached (:meth:`~DownWaterBiller.down`) |
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Connection

from billgw.billing_adapters.interface import BillStatus
from billgw.billing_adapters.transports.sql import make_biller_engine

from .adapter import SETTINGS
from .mapping import WaterTables

# The simulated utility's own names: nothing like ours, as in real life.
SIM_MAPPING: dict[str, Any] = {
    "tables": {"bills": "WB_BILL", "intake": "WB_PAY_INTAKE", "reversals": "WB_PAY_REVERSAL"},
    "bill_columns": {"account": "ACCT_NO", "bill_number": "BILL_NO", "customer_name": "CUST_NAME",
                     "amount_due": "AMT_DUE_FILS", "issue_date": "ISSUE_DT", "due_date": "DUE_DT",
                     "status": "BILL_STAT"},
    "bill_status_codes": {"O": "NEW", "PP": "PARTIALLY_PAID", "C": "PAID", "X": "EXPIRED"},
    "intake_columns": {"id": "INTAKE_ID", "payment_id": "GW_PAY_REF", "account": "ACCT_NO", "bill_number": "BILL_NO",
                       "amount": "PAY_AMT_FILS", "paid_at": "PAY_TS", "channel": "CHANNEL", "status": "PROC_STAT",
                       "receipt": "RCPT_NO", "reject_reason": "REJ_RSN"},
    "intake_codes": {"pending": "N", "posted": "P", "rejected": "R", "withdrawn": "W"},
    "reversal_columns": {"payment_id": "GW_PAY_REF", "amount": "REV_AMT_FILS", "reversed_at": "REV_TS",
                         "reason": "REV_RSN"},
}

_N, _P, _X = BillStatus.NEW, BillStatus.PAID, BillStatus.EXPIRED
# account, customer, [(bill number, amount due in fils, issue, due, status)]
SAMPLE_ACCOUNTS = (
    ("3000000001", "Omar Haddad", [("WB3000000001-11", 15_750, "2026-11-01", "2026-11-30", _N)]),
    ("3000000002", "Yousef Amin", [("WB3000000002-10", 8_000, "2026-10-01", "2026-10-31", _N),
                                   ("WB3000000002-11", 9_500, "2026-11-01", "2026-11-30", _N)]),
    ("3000000003", "Rana Saleh", [("WB3000000003-11", 0, "2026-11-01", "2026-11-30", _P)]),
    ("3000000004", "Sami Nasser", [("WB3000000004-08", 4_000, "2026-08-01", "2026-08-31", _X)]),
    ("3000000005", "ليلى حسن", [("WB3000000005-11", 22_000, "2026-11-01", "2026-11-30", _N)]),
)
LOAD_ACCOUNT_BASE = 3_100_000_000  # --accounts N: accounts 3100000000 + i, one large bill each


@dataclass(frozen=True)
class BatchResult:
    posted: int
    rejected: int


def sim_settings(url: str, mapping: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The adapter settings that reach this simulator's tables."""
    return {"url": url, **(mapping or SIM_MAPPING), **extra}


class WaterBillerSim:
    """The biller's tables in ``url`` (schema ``schema``), and its batch."""

    def __init__(self, url: str, mapping: dict[str, Any] | None = None, *, schema: str | None = None,
                 receipt_prefix: str = "WR", lock_timeout: float = 30.0):
        checked = SETTINGS.check(sim_settings(url, mapping, **({"schema": schema} if schema else {})))
        self.url = url
        self.schema = schema
        self.tables = WaterTables.from_settings(checked, schema=schema)
        self.receipt_prefix = receipt_prefix
        self.lock_timeout = lock_timeout
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_biller_engine(self._create_url(), pool_size=2, lock_timeout=self.lock_timeout,
                                              statement_timeout=self.lock_timeout, connect_timeout=self.lock_timeout)
        return self._engine

    def _create_url(self) -> str:
        # The biller creates its own database file (the adapter never does).
        if self.url.startswith("sqlite") and not os.path.exists(self._sqlite_path() or ":memory:"):
            open(self._sqlite_path(), "a").close()
        return self.url

    def _sqlite_path(self) -> str | None:
        from sqlalchemy.engine import make_url

        parsed = make_url(self.url)
        return parsed.database if parsed.get_backend_name() == "sqlite" else None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # --- tables ------------------------------------------------------------------

    def create(self, *, seed: bool = True, accounts: int = 0, account_base: int = LOAD_ACCOUNT_BASE) -> None:
        """Create the tables (and the schema) if missing; seed an empty bills
        table (``accounts`` load accounts numbered from ``account_base``,
        ten digits with leading zeros)."""
        with self.engine.begin() as conn:
            if self.schema:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            self.tables.metadata.create_all(conn)
            if seed and conn.execute(select(func.count()).select_from(self.tables.bills)).scalar() == 0:
                self._seed(conn, accounts, account_base)

    def drop(self) -> None:
        with self.engine.begin() as conn:
            self.tables.metadata.drop_all(conn)

    def _seed(self, conn: Connection, accounts: int, account_base: int = LOAD_ACCOUNT_BASE) -> None:
        bc = self.tables.bill_columns
        rows = []
        for account, name, bills in SAMPLE_ACCOUNTS:
            for number, due, issued, due_date, status in bills:
                rows.append({"account": account, "customer_name": name, "bill_number": number, "amount_due": due,
                             "issue_date": issued, "due_date": due_date, "status": self._code_for(status)})
        for i in range(accounts):
            account = f"{account_base + i:010d}"
            rows.append({"account": account, "customer_name": f"Load {i}", "bill_number": f"WL{account}",
                         "amount_due": 1_000_000_000, "issue_date": "2026-11-01", "due_date": "2026-11-30",
                         "status": self._code_for(BillStatus.NEW)})
        conn.execute(insert(self.tables.bills),
                     [{bc[k]: v for k, v in row.items() if bc.get(k)} for row in rows])

    def _code_for(self, status: BillStatus) -> str:
        return next(code for code, s in self.tables.bill_status_codes.items() if s is status)

    # --- the batch -------------------------------------------------------------------

    def reject_reason(self, row, bill) -> str | None:
        """Why the batch refuses an intake row (None: it books it)."""
        if bill is None:
            return "BILL NOT FOUND"
        status = self.tables.bill_status_codes.get(bill[self.tables.bill_columns["status"]])
        if status not in (BillStatus.NEW, BillStatus.PARTIALLY_PAID):
            return "BILL NOT PAYABLE"
        return None

    def run_batch(self, now: float | None = None) -> BatchResult:
        """Book or reject every pending intake row, in one transaction."""
        with self.engine.begin() as conn:
            return self._batch(conn, now if now is not None else time.time())

    def _batch(self, conn: Connection, now: float) -> BatchResult:
        t = self.tables
        ic, bc = t.intake_columns, t.bill_columns
        pending = conn.execute(select(t.intake).where(t.c_intake("status") == t.code["pending"])
                               .order_by(t.c_intake("id"))).mappings().all()
        posted = rejected = 0
        for row in pending:
            bill = conn.execute(select(t.bills).where(
                t.c_bill("account") == row[ic["account"]],
                t.c_bill("bill_number") == row[ic["bill_number"]])).mappings().first()
            reason = self.reject_reason(row, bill)
            where = t.c_intake("id") == row[ic["id"]]
            if reason is not None:
                values = {ic["status"]: t.code["rejected"]}
                if ic.get("reject_reason"):
                    values[ic["reject_reason"]] = reason
                conn.execute(update(t.intake).where(where).values(values))
                rejected += 1
                continue
            receipt = f"{self.receipt_prefix}{row[ic['id']]:010d}"
            conn.execute(update(t.intake).where(where).values({ic["status"]: t.code["posted"], ic["receipt"]: receipt}))
            left = max(0, int(bill[bc["amount_due"]]) - int(row[ic["amount"]]))
            code = self._code_for(BillStatus.PAID if left == 0 else BillStatus.PARTIALLY_PAID)
            conn.execute(update(t.bills).where(
                t.c_bill("account") == bill[bc["account"]], t.c_bill("bill_number") == bill[bc["bill_number"]])
                .values({bc["amount_due"]: left, bc["status"]: code}))
            posted += 1
        return BatchResult(posted, rejected)

    def intake_rows(self) -> list[dict[str, Any]]:
        """The intake table by our names (for tests and the demo)."""
        t = self.tables
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.intake).order_by(t.c_intake("id"))).mappings().all()
        return [{key: row[col] for key, col in t.intake_columns.items() if col} for row in rows]


class RejectingWaterBiller(WaterBillerSim):
    """Misbehaviour: the batch rejects every row (an account under audit)."""

    def reject_reason(self, row, bill) -> str | None:
        return "ACCOUNT UNDER AUDIT"


class SlowWaterBiller(WaterBillerSim):
    """Misbehaviour: the biller's tables are locked by a long batch.

    :meth:`locked` holds the lock until its block ends, so tests decide how
    long (no sleeping); ``run_batch`` holds it ``slow_seconds`` first."""

    slow_seconds = 10.0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        conn = self.engine.connect()
        try:
            if conn.dialect.name == "sqlite":
                conn.connection.driver_connection.execute("BEGIN EXCLUSIVE")
            else:
                conn.begin()
                t = self.tables
                for table in (t.bills, t.intake):
                    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
                    conn.exec_driver_sql(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
            yield
        finally:
            if conn.dialect.name == "sqlite":
                conn.connection.driver_connection.execute("ROLLBACK")
            else:
                conn.rollback()
            conn.close()

    def run_batch(self, now: float | None = None) -> BatchResult:
        with self.locked():
            time.sleep(self.slow_seconds)  # the simulator's own process: a slow batch, deliberately
        return super().run_batch(now)


class DownWaterBiller(WaterBillerSim):
    """Misbehaviour: the biller's database cannot be reached.

    SQLite: the file is moved aside; PostgreSQL: the biller's schema is
    renamed away (give the simulator a schema).  :meth:`up` undoes it."""

    def down(self) -> None:
        self.close()
        path = self._sqlite_path()
        if path is not None:
            os.replace(path, path + ".down")
            return
        if not self.schema:
            raise ValueError("a PostgreSQL water biller goes down by its schema: give it one (--schema)")
        with self.engine.begin() as conn:
            conn.execute(text(f'ALTER SCHEMA "{self.schema}" RENAME TO "{self.schema}_down"'))
        self.close()

    def up(self) -> None:
        path = self._sqlite_path()
        if path is not None:
            if os.path.exists(path + ".down"):
                os.replace(path + ".down", path)
            return
        with self.engine.begin() as conn:
            conn.execute(text(f'ALTER SCHEMA "{self.schema}_down" RENAME TO "{self.schema}"'))


BEHAVIOURS = {"normal": WaterBillerSim, "rejects": RejectingWaterBiller, "slow": SlowWaterBiller,
              "down": DownWaterBiller}


# --- the CLI: billgw water-sim ------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default="sqlite:///var/water-biller.sqlite",
                        help="the biller's database (SQLAlchemy URL; an SQLite file is created)")
    parser.add_argument("--schema", default=None, help="the schema of the biller's tables (PostgreSQL)")
    parser.add_argument("--init", action="store_true", help="create the tables (and seed sample accounts) first")
    parser.add_argument("--accounts", type=int, default=0, help="also seed N load-test accounts")
    parser.add_argument("--batch-now", action="store_true", help="run the biller's batch once and exit")
    parser.add_argument("--batch-interval", type=float, default=60.0, help="seconds between batch runs")
    parser.add_argument("--batches", type=int, default=0, help="stop after N batch runs (0: run until stopped)")
    parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="normal",
                        help="one misbehaviour: rejects (batch rejects rows), slow (tables locked), "
                             "down (database unreachable until stopped)")
    parser.add_argument("--slow-seconds", type=float, default=10.0, help="how long 'slow' holds the lock")


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%H:%M:%S")


def run_from_args(args, *, stop: threading.Event | None = None) -> int:
    """``billgw water-sim``: blocking; returns the exit status."""
    sim = BEHAVIOURS[args.behaviour](args.db, schema=args.schema)
    if isinstance(sim, SlowWaterBiller):
        sim.slow_seconds = args.slow_seconds
    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM ends the loop (and brings a 'down' biller back up) cleanly.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args.init:
            sim.create(accounts=args.accounts)
            print(f"water biller tables ready ({sim.tables.bills.name}, {sim.tables.intake.name})", flush=True)
        if isinstance(sim, DownWaterBiller):
            sim.down()
            print("water biller DOWN: its database cannot be reached until this stops", flush=True)
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
            finally:
                sim.up()
            return 0
        runs = 0
        while not stop.is_set():
            result = sim.run_batch()
            runs += 1
            print(f"{_stamp()} batch: {result.posted} posted, {result.rejected} rejected", flush=True)
            if args.batch_now or (args.batches and runs >= args.batches):
                break
            stop.wait(args.batch_interval)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        sim.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
