"""The telecom biller's ledger: its tables, its sample and load subscribers,
and its business rules as plain functions on a DB-API cursor (``now``
passed in), each run inside one transaction by the back office
(:mod:`.back_office`); and the read-only extract ``billgw audit`` reads.

A refusal is a :class:`TelecomFault` (answered as a SOAP fault by the site):
nothing is recorded.  ``extra_subscribers=N`` seeds N more subscribers
(0790000000 + i) with one very large open bill each, so a load generator
can make thousands of partial payments without running out of bills.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from billgw.billing_adapters import soap
from billgw.billing_adapters.interface import LedgerEntry, LedgerUnavailable

REVERSAL_POLICIES = ("allowed", "never")

# (subscriber number, customer name, ((bill number, amount, outstanding, due date), ...))
# Amounts in fils (JOD minor units, 3 decimals); currency 400 = JOD.
SEED_SUBSCRIBERS: tuple[tuple[str, str, tuple[tuple[str, int, int, str], ...]], ...] = (
    ("0791234567", "Layla Haddad", (("TB-2024-000101", 12500, 12500, "20240630"),)),
    ("0797654321", "Omar Khalil", (
        ("TB-2024-000201", 8250, 8250, "20240430"),
        ("TB-2024-000202", 9750, 9750, "20240531"),
    )),
    ("0781111111", "Sami Nasser", (("TB-2024-000301", 15000, 0, "20240531"),)),
    ("0777000001", "Rania Saleh", (("TB-2024-000401", 45000, 45000, "20240715"),)),
    ("0796666666", "هالة منصور", (("TB-2024-000501", 3000, 3000, "20240620"),)),
    ("0788888888", "Kareem Aziz", (
        ("TB-2024-000601", 20000, 5000, "20240331"),
        ("TB-2024-000602", 120000, 120000, "20240430"),
        ("TB-2024-000603", 7125, 7125, "20240531"),
    )),
)
SEED_CURRENCY = "400"

# Optional load-test seeding (``extra_subscribers``): subscriber i is
# EXTRA_SUBSCRIBER_BASE + i, which matches the gateway's default
# billing-number pattern ^07[789][0-9]{7}$, with one bill of
# EXTRA_BILL_AMOUNT fils (1,000,000.000 JOD): thousands of partial payments
# of up to the gateway's 5,000.000 JOD maximum all fit.
EXTRA_SUBSCRIBER_BASE = 790000000
EXTRA_SUBSCRIBERS_MAX = 1_000_000
EXTRA_BILL_AMOUNT = 1_000_000_000
EXTRA_BILL_DUE_DATE = "20991231"


def extra_subscriber_number(index: int) -> str:
    """Billing number of the ``index``-th extra subscriber: ``0790000000 + index``."""
    return f"{EXTRA_SUBSCRIBER_BASE + index:010d}"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS subscribers (
        subscriber_number TEXT PRIMARY KEY,
        customer_name TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS bills (
        bill_number TEXT PRIMARY KEY,
        subscriber_number TEXT NOT NULL REFERENCES subscribers (subscriber_number),
        amount INTEGER NOT NULL CHECK (amount > 0),
        outstanding INTEGER NOT NULL CHECK (outstanding >= 0 AND outstanding <= amount),
        due_date TEXT NOT NULL,
        currency TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS postings (
        posting_id INTEGER PRIMARY KEY AUTOINCREMENT,
        payment_id TEXT NOT NULL UNIQUE,
        subscriber_number TEXT NOT NULL REFERENCES subscribers (subscriber_number),
        bill_number TEXT NOT NULL REFERENCES bills (bill_number),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        paid_at TEXT NOT NULL,
        channel TEXT NOT NULL,
        receipt_number TEXT UNIQUE,
        posted_at TEXT NOT NULL)""",
    # One row per reversed PaymentId.  found = 0 records a reversal that came
    # before (or instead of) its payment, so a late PostPayment is refused.
    """CREATE TABLE IF NOT EXISTS reversals (
        payment_id TEXT PRIMARY KEY,
        found INTEGER NOT NULL,
        reversed_at TEXT NOT NULL)""",
)


class TelecomFault(Exception):
    """A refusal the biller answers with a SOAP fault (spec: Faults)."""

    def __init__(self, code: str, message: str, fault_code: str = "Client"):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fault_code = fault_code

    def as_soap_fault(self) -> soap.SoapFault:
        return soap.SoapFault(self.fault_code, self.message, self.code, self.message)


# One payment in the biller's ledger, as an auditor sees it: the
# interface's LedgerEntry (the name is kept for the simulator's callers).
Posting = LedgerEntry


@dataclass(frozen=True)
class LedgerBill:
    bill_number: str
    subscriber: str
    amount: int
    outstanding: int
    due_date: str
    currency: str


@dataclass(frozen=True)
class SubscriberBills:
    subscriber: str
    customer_name: str
    bills: tuple[LedgerBill, ...]


@dataclass(frozen=True)
class PostPaymentRequest:
    payment_id: str
    subscriber: str
    bill_number: str | None
    amount: int
    currency: str
    paid_at: str
    channel: str


@dataclass(frozen=True)
class PaymentStatusRecord:
    payment_id: str
    status: str  # POSTED | NOT_FOUND | REVERSED
    receipt_number: str | None = None
    amount: int | None = None


# --- ledger: business rules on a cursor, one transaction each ----------------

def ledger_create(cursor, extra_subscribers: int = 0) -> None:
    """Create the tables and seed the sample subscribers (plus
    ``extra_subscribers`` load-test ones); idempotent, so a restarted
    simulator keeps the payments it recorded and the bills' balances."""
    if not 0 <= extra_subscribers <= EXTRA_SUBSCRIBERS_MAX:
        raise ValueError(f"extra_subscribers must be 0..{EXTRA_SUBSCRIBERS_MAX}, not {extra_subscribers}")
    for statement in SCHEMA:
        cursor.execute(statement)
    for number, name, bills in SEED_SUBSCRIBERS:
        cursor.execute("INSERT OR IGNORE INTO subscribers VALUES (?, ?)", (number, name))
        for bill_number, amount, outstanding, due_date in bills:
            cursor.execute(
                "INSERT OR IGNORE INTO bills VALUES (?, ?, ?, ?, ?, ?)",
                (bill_number, number, amount, outstanding, due_date, SEED_CURRENCY),
            )
    numbers = [extra_subscriber_number(i) for i in range(extra_subscribers)]
    cursor.executemany("INSERT OR IGNORE INTO subscribers VALUES (?, ?)",
                       [(n, f"Load Subscriber {n}") for n in numbers])
    cursor.executemany(
        "INSERT OR IGNORE INTO bills VALUES (?, ?, ?, ?, ?, ?)",
        [(f"TB-LOAD-{n}", n, EXTRA_BILL_AMOUNT, EXTRA_BILL_AMOUNT, EXTRA_BILL_DUE_DATE, SEED_CURRENCY)
         for n in numbers],
    )


_BILL_COLUMNS = "bill_number, subscriber_number, amount, outstanding, due_date, currency"


def _customer_name(cursor, subscriber: str) -> str:
    cursor.execute("SELECT customer_name FROM subscribers WHERE subscriber_number = ?", (subscriber,))
    row = cursor.fetchone()
    if row is None:
        raise TelecomFault("SUBSCRIBER_NOT_FOUND", f"no subscriber {subscriber}")
    return row[0]


def _bills(cursor, subscriber: str) -> list[LedgerBill]:
    cursor.execute(
        f"SELECT {_BILL_COLUMNS} FROM bills WHERE subscriber_number = ? ORDER BY due_date, bill_number",
        (subscriber,),
    )
    return [LedgerBill(*row) for row in cursor.fetchall()]


def ledger_subscriber_bills(cursor, subscriber: str) -> SubscriberBills:
    """All the subscriber's bills, open or not, oldest first."""
    name = _customer_name(cursor, subscriber)
    return SubscriberBills(subscriber, name, tuple(_bills(cursor, subscriber)))


def ledger_get_bills(cursor, subscriber: str, bill_number: str | None) -> SubscriberBills:
    """GetBills: the open bills, or the one named (which must be open)."""
    everything = ledger_subscriber_bills(cursor, subscriber)
    if bill_number is not None:
        named = [b for b in everything.bills if b.bill_number == bill_number]
        if not named:
            raise TelecomFault("BILL_NOT_FOUND", f"no bill {bill_number} for {subscriber}")
        if named[0].outstanding == 0:
            raise TelecomFault("BILL_ALREADY_PAID", f"bill {bill_number} is settled")
        return SubscriberBills(subscriber, everything.customer_name, tuple(named))
    open_bills = tuple(b for b in everything.bills if b.outstanding > 0)
    return SubscriberBills(subscriber, everything.customer_name, open_bills)


def _payment_row(cursor, payment_id: str):
    cursor.execute(
        "SELECT payment_id, subscriber_number, bill_number, amount, currency, receipt_number "
        "FROM postings WHERE payment_id = ?",
        (payment_id,),
    )
    return cursor.fetchone()


def _reversal_row(cursor, payment_id: str):
    cursor.execute("SELECT found FROM reversals WHERE payment_id = ?", (payment_id,))
    return cursor.fetchone()


def ledger_post_payment(cursor, request: PostPaymentRequest, now: str) -> tuple[str, str, int]:
    """PostPayment: returns (receipt number, bill credited, amount posted).

    The PaymentId check comes first: a repeat of a payment that settled the
    bill must get its receipt back, not BILL_ALREADY_PAID.
    """
    if _reversal_row(cursor, request.payment_id) is not None:
        raise TelecomFault("DUPLICATE_MISMATCH", f"payment {request.payment_id} was reversed; use a new PaymentId")
    existing = _payment_row(cursor, request.payment_id)
    if existing is not None:
        _, subscriber, bill_number, amount, currency, receipt = existing
        same = (
            subscriber == request.subscriber
            and amount == request.amount
            and currency == request.currency
            and request.bill_number in (None, bill_number)
        )
        if not same:
            raise TelecomFault("DUPLICATE_MISMATCH", f"payment {request.payment_id} was posted with other data")
        return receipt, bill_number, amount

    _customer_name(cursor, request.subscriber)
    bills = _bills(cursor, request.subscriber)
    if request.bill_number is not None:
        named = [b for b in bills if b.bill_number == request.bill_number]
        if not named:
            raise TelecomFault("BILL_NOT_FOUND", f"no bill {request.bill_number} for {request.subscriber}")
        bill = named[0]
        if bill.outstanding == 0:
            raise TelecomFault("BILL_ALREADY_PAID", f"bill {bill.bill_number} is settled")
    else:
        open_bills = [b for b in bills if b.outstanding > 0]
        if not open_bills:
            raise TelecomFault("NO_BILL_DUE", f"nothing due for {request.subscriber}")
        bill = open_bills[0]
    if request.currency != bill.currency:
        raise TelecomFault("INVALID_AMOUNT", f"currency {request.currency} but bill is in {bill.currency}")
    if not 0 < request.amount <= bill.outstanding:
        raise TelecomFault("INVALID_AMOUNT", f"amount {request.amount} outside 1..{bill.outstanding}")

    cursor.execute(
        "INSERT INTO postings (payment_id, subscriber_number, bill_number, amount, currency, paid_at,"
        " channel, posted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (request.payment_id, request.subscriber, bill.bill_number, request.amount, request.currency,
         request.paid_at, request.channel, now),
    )
    receipt = f"TR{cursor.lastrowid:010d}"
    cursor.execute("UPDATE postings SET receipt_number = ? WHERE payment_id = ?", (receipt, request.payment_id))
    cursor.execute(
        "UPDATE bills SET outstanding = outstanding - ? WHERE bill_number = ?", (request.amount, bill.bill_number)
    )
    return receipt, bill.bill_number, request.amount


def ledger_payment_status(cursor, payment_id: str) -> PaymentStatusRecord:
    row = _payment_row(cursor, payment_id)
    if row is None:
        return PaymentStatusRecord(payment_id, "NOT_FOUND")
    status = "REVERSED" if _reversal_row(cursor, payment_id) is not None else "POSTED"
    return PaymentStatusRecord(payment_id, status, receipt_number=row[5], amount=row[3])


def ledger_reverse_payment(cursor, payment_id: str, policy: str, now: str) -> str:
    """ReversePayment: "REVERSED" or "NOT_FOUND"; puts the amount back on the bill."""
    if policy == "never":
        raise TelecomFault("REVERSAL_NOT_PERMITTED", "this biller does not accept reversals")
    reversal = _reversal_row(cursor, payment_id)
    row = _payment_row(cursor, payment_id)
    if reversal is not None:
        return "REVERSED" if reversal[0] else "NOT_FOUND"
    cursor.execute("INSERT INTO reversals VALUES (?, ?, ?)", (payment_id, 1 if row else 0, now))
    if row is None:
        return "NOT_FOUND"
    cursor.execute("UPDATE bills SET outstanding = outstanding + ? WHERE bill_number = ?", (row[3], row[2]))
    return "REVERSED"


def ledger_postings(cursor) -> list[Posting]:
    cursor.execute(
        "SELECT p.payment_id, p.subscriber_number, p.bill_number, p.amount, p.receipt_number,"
        " EXISTS (SELECT 1 FROM reversals r WHERE r.payment_id = p.payment_id), p.posted_at"
        " FROM postings p ORDER BY p.posting_id"
    )
    return [
        Posting(pid, sub, bill, amount, receipt, bool(rev), posted_at)
        for pid, sub, bill, amount, receipt, rev, posted_at in cursor.fetchall()
    ]


def read_ledger(db_path: str | Path) -> list[Posting]:
    """The postings, read with a plain blocking connection (read-only).

    For an audit from another process (CLI); never call it on a reactor
    thread.  WAL mode lets it read while the simulator writes.
    """
    uri = Path(db_path).resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        return ledger_postings(connection.cursor())
    finally:
        connection.close()


def read_ledger_file(path: str | None) -> list[LedgerEntry]:
    """:func:`read_ledger` for ``billgw audit``: every failure is a
    :class:`LedgerUnavailable` that says what is wrong with the file."""
    if not path:
        raise LedgerUnavailable("no ledger named: give --ledger CODE=PATH (the simulator's SQLite file)")
    if not Path(path).is_file():
        raise LedgerUnavailable(f"no ledger file at {path}")
    try:
        return read_ledger(path)
    except (sqlite3.Error, OSError) as exc:
        lines = str(exc).strip().splitlines()
        raise LedgerUnavailable(f"cannot read ledger {path} ({type(exc).__name__}: "
                                f"{lines[0] if lines else ''})") from None
