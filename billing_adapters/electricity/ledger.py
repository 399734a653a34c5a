"""The electricity host's back office for the simulator: accounts, bills and
the payment ledger in an SQLite file, with the host's rules.

Blocking functions on an ``sqlite3`` connection, each one transaction; the
simulator runs them on a thread of its own (never on the reactor).  Amounts
are the host's: integers in thousandths (``Decimal('12.500')`` is 12500).
A refusal is :class:`HostRefusal` -- answered as a ``REJT`` record, and
nothing is recorded.  :func:`read_ledger_file` is what ``billgw audit``
reads (the host's payment extract).
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from billgw.billing_adapters.interface import LedgerEntry, LedgerUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    service TEXT NOT NULL, account TEXT NOT NULL, customer TEXT NOT NULL, currency INTEGER NOT NULL,
    PRIMARY KEY (service, account));
CREATE TABLE IF NOT EXISTS bills (
    service TEXT NOT NULL, account TEXT NOT NULL, bill_number TEXT NOT NULL, amount INTEGER NOT NULL,
    outstanding INTEGER NOT NULL, issue_date INTEGER NOT NULL, due_date INTEGER NOT NULL,
    partial INTEGER NOT NULL, min_amount INTEGER NOT NULL, PRIMARY KEY (service, account, bill_number));
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY, service TEXT NOT NULL, account TEXT NOT NULL, amount INTEGER NOT NULL,
    currency INTEGER NOT NULL, paid_at INTEGER NOT NULL, receipt TEXT NOT NULL, settled TEXT NOT NULL,
    reversed INTEGER NOT NULL DEFAULT 0, posted_at TEXT NOT NULL, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (payment_id TEXT PRIMARY KEY, at TEXT NOT NULL);
"""

SERVICE = "ELECTRIC"
# account, customer, bills (bill number, amount, outstanding, issue, due, partial, min)
SEED = (
    ("2000000001", "Rana Haddad", (("EB-2000000001-1", 23_450, 23_450, 20260301, 20260331, False, 0),)),
    ("2000000002", "Omar Saleh", (("EB-2000000002-1", 15_000, 15_000, 20260201, 20260228, True, 5_000),
                                  ("EB-2000000002-2", 12_250, 12_250, 20260301, 20260331, True, 5_000))),
    ("2000000003", "Lina Khoury", (("EB-2000000003-1", 9_000, -1_500, 20260101, 20260131, False, 0),)),
)


class HostRefusal(Exception):
    """Refused, nothing recorded (a REJT record with this error code)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message[:40]


@dataclass(frozen=True)
class HostPayment:
    payment_id: str
    account: str
    amount: int
    receipt: str
    settled: tuple[tuple[str, int], ...]
    reversed: bool


def connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


EXTRA_ACCOUNT_BASE = 2_900_000_000  # the load accounts: 2900000000, 2900000001, ...


def seed(conn: sqlite3.Connection, *, service: str = SERVICE, currency: int = 400, extra_accounts: int = 0,
         extra_account_base: int = EXTRA_ACCOUNT_BASE) -> None:
    """The demo accounts (and ``extra_accounts`` more with one 10.000 bill
    each, numbered from ``extra_account_base``: a load whose switch texts
    the billing number as a mobile number numbers them like mobiles)."""
    extra = [f"{extra_account_base + i:010d}" for i in range(extra_accounts)]
    rows = list(SEED) + [(account, f"Subscriber {i}", ((f"EB-{account}-1", 10_000, 10_000, 20260301,
                                                        20260331, True, 1_000),)) for i, account in enumerate(extra)]
    with _transaction(conn):
        for account, customer, bills in rows:
            conn.execute("INSERT OR IGNORE INTO accounts VALUES (?, ?, ?, ?)", (service, account, customer, currency))
            for number, amount, outstanding, issue, due, partial, minimum in bills:
                conn.execute("INSERT OR IGNORE INTO bills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (service, account, number, amount, outstanding, issue, due, int(partial), minimum))


def _account(conn, service: str, account: str):
    row = conn.execute("SELECT customer, currency FROM accounts WHERE service = ? AND account = ?",
                       (service, account)).fetchone()
    if row is None:
        raise HostRefusal("E101", f"no account {account} for {service}")
    return row


def _open_bills(conn, service: str, account: str) -> list[tuple]:
    return conn.execute("SELECT bill_number, outstanding, issue_date, due_date, partial, min_amount FROM bills "
                        "WHERE service = ? AND account = ? ORDER BY due_date, bill_number",
                        (service, account)).fetchall()


def inquire(conn, service: str, account: str, bill_number: str = "") -> dict:
    """INQA values: the account's open bills (a credit shows as negative)."""
    customer, currency = _account(conn, service, account)
    bills = [b for b in _open_bills(conn, service, account) if b[1] != 0]
    if bill_number:
        bills = [b for b in bills if b[0] == bill_number]
        if not bills:
            raise HostRefusal("E102", f"no open bill {bill_number}")
    if not any(b[1] > 0 for b in bills):
        raise HostRefusal("E103", "nothing due on the account")
    return {"account": account, "customer": customer, "currency": currency, "bills": [
        {"bill_number": n, "amount_due": due, "issue_date": issue, "due_date": due_date,
         "partial": "Y" if partial else "N", "min_amount": minimum}
        for n, due, issue, due_date, partial, minimum in bills[:6]]}


def pay(conn, *, payment_id: str, service: str, account: str, amount: int, currency: int, paid_at: int,
        bills: list[tuple[str, int]], now: str) -> HostPayment:
    """Record a payment, idempotently on ``payment_id``."""
    with _transaction(conn):
        existing = find(conn, payment_id)
        if existing is not None:
            if existing.reversed or (existing.account, existing.amount) != (account, amount):
                raise HostRefusal("E108", "payment id already used for another payment")
            return existing
        if conn.execute("SELECT 1 FROM tombstones WHERE payment_id = ?", (payment_id,)).fetchone():
            raise HostRefusal("E108", "payment id was reversed")
        _account(conn, service, account)
        open_bills = {b[0]: b for b in _open_bills(conn, service, account) if b[1] > 0}
        if not open_bills:
            raise HostRefusal("E103", "nothing due on the account")
        settled = _allocate(conn, service, account, open_bills, amount, bills)
        position = conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM payments").fetchone()[0]
        receipt = f"ER{position:010d}"
        for number, part in settled:
            conn.execute("UPDATE bills SET outstanding = outstanding - ? WHERE service = ? AND account = ? "
                         "AND bill_number = ?", (part, service, account, number))
        conn.execute("INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                     (payment_id, service, account, amount, currency, paid_at, receipt,
                      json.dumps(settled), now, position))
        return HostPayment(payment_id, account, amount, receipt, tuple(map(tuple, settled)), False)


def _allocate(conn, service, account, open_bills: dict, amount: int, named: list[tuple[str, int]]) -> list:
    if amount <= 0:
        raise HostRefusal("E105", "amount must be positive")
    if named:
        if sum(part for _, part in named) != amount:
            raise HostRefusal("E105", "bill amounts do not add up to the amount")
        plan = []
        for number, part in named:
            bill = open_bills.get(number)
            if bill is None:
                known = conn.execute("SELECT outstanding FROM bills WHERE service = ? AND account = ? AND "
                                     "bill_number = ?", (service, account, number)).fetchone()
                raise HostRefusal("E104" if known else "E102", f"bill {number} {'paid' if known else 'unknown'}")
            plan.append((number, part))
    else:
        plan, left = [], amount
        for number, bill in open_bills.items():  # oldest due first
            if left == 0:
                break
            part = min(left, bill[1])
            plan.append((number, part))
            left -= part
        if left:
            raise HostRefusal("E105", f"amount exceeds what is due by {left}")
    for number, part in plan:
        _, outstanding, _, _, partial, minimum = open_bills[number]
        if part > outstanding or (not partial and part != outstanding) or (partial and part < min(minimum, outstanding)):
            raise HostRefusal("E105", f"amount {part} not accepted on {number}")
    return plan


def find(conn, payment_id: str) -> HostPayment | None:
    row = conn.execute("SELECT payment_id, account, amount, receipt, settled, reversed FROM payments "
                       "WHERE payment_id = ?", (payment_id,)).fetchone()
    if row is None:
        return None
    return HostPayment(row[0], row[1], row[2], row[3], tuple(tuple(s) for s in json.loads(row[4])), bool(row[5]))


def reverse(conn, payment_id: str, *, policy: str, now: str) -> HostPayment | None:
    """Undo a payment (idempotent); None when the host never had it (a
    tombstone then keeps the id from being recorded later)."""
    if policy == "never":
        raise HostRefusal("E107", "reversals are not taken")
    with _transaction(conn):
        payment = find(conn, payment_id)
        if payment is None:
            conn.execute("INSERT OR IGNORE INTO tombstones VALUES (?, ?)", (payment_id, now))
            return None
        if not payment.reversed:
            service = conn.execute("SELECT service FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()[0]
            for number, part in payment.settled:
                conn.execute("UPDATE bills SET outstanding = outstanding + ? WHERE service = ? AND account = ? "
                             "AND bill_number = ?", (part, service, payment.account, number))
            conn.execute("UPDATE payments SET reversed = 1 WHERE payment_id = ?", (payment_id,))
        return find(conn, payment_id)


def payments(conn) -> list[HostPayment]:
    ids = [r[0] for r in conn.execute("SELECT payment_id FROM payments ORDER BY position")]
    return [find(conn, i) for i in ids]


def read_host_ledger(path: str | None) -> list[LedgerEntry]:
    """The audit's read: the ``ledger`` setting or the ``--ledger`` source."""
    if not path:
        raise LedgerUnavailable("no ledger file: set the 'ledger' setting or name one with --ledger")
    return read_ledger_file(path)


def read_ledger_file(path: str) -> list[LedgerEntry]:
    """Every payment in the host's ledger file (read-only; blocking)."""
    if not Path(path).is_file():
        raise LedgerUnavailable(f"no ledger file {path}")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            rows = conn.execute("SELECT payment_id, account, settled, amount, receipt, reversed, posted_at "
                                "FROM payments ORDER BY position").fetchall()
    except sqlite3.Error as exc:
        raise LedgerUnavailable(f"cannot read {path}: {exc}") from None
    return [LedgerEntry(payment_id=p, subscriber=a, bill_number=",".join(n for n, _ in json.loads(s)),
                        amount=amount, receipt_number=r, reversed=bool(rev), posted_at=at)
            for p, a, s, amount, r, rev, at in rows]
