"""A simulator of the telecom biller: its SOAP service and its own ledger.

The gateway's demo, the CLI (``billgw telecom-sim``) and the tests talk to it
over real HTTP, exactly as they would to the biller, and then read its ledger
to check what the biller actually recorded -- which is the only thing that
counts when a payment is IN_DOUBT.

Layers, as in Twisted Names:

- ledger functions (``ledger_*``): the biller's business rules on a DB-API
  cursor, with ``now`` passed in; each runs inside one transaction;
- :class:`TelecomSimulator`: runs them on its own single-thread
  ``adbapi.ConnectionPool`` (SQLite), never on the reactor thread, and hands
  dataclasses back;
- :class:`TelecomResource`: the thin twisted.web front end decoding SOAP,
  dispatching, encoding.  Misbehaving billers are subclasses that change one
  thing each (Jasmin's simulator family): :class:`SlowTelecomResource`,
  :class:`FailingTelecomResource`, :class:`GarbageTelecomResource`,
  :class:`PostThenDropResource`.  Refusing reversals is a simulator option
  (``reversal_policy="never"``), because it is biller policy, not a fault.
- :class:`FaultyTelecomResource`: for chaos tests, a mix of those
  misbehaviours drawn per request from a seeded RNG (:class:`FaultOptions`,
  ``listen_telecom_sim(..., faults=...)``, ``billgw telecom-sim --fault-*``).

``extra_subscribers=N`` seeds N more subscribers (0790000000 + i) with one
very large open bill each, so a load generator can make thousands of partial
payments without running out of bills.
"""
from __future__ import annotations

import argparse
import functools
import random
import sqlite3
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.web import resource, server

from billgw.billing_adapters import soap
from billgw.billing_adapters.interface import LedgerEntry, LedgerUnavailable
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, SERVICE_PATH, TELECOM_NS

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


def _configure_connection(connection) -> None:
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA journal_mode = WAL")


def _utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class TelecomSimulator:
    """The biller's back office: the ledger on its own bounded thread.

    ``clock`` stamps postings and reversals; ``reactor`` runs the database
    pool's thread hand-offs.  Every public method is one transaction and
    returns a Deferred of plain dataclasses.
    """

    def __init__(self, reactor, db_path: str | Path, *, reversal_policy: str = "allowed", clock=None, log=None,
                 extra_subscribers: int = 0):
        if not 0 <= extra_subscribers <= EXTRA_SUBSCRIBERS_MAX:
            raise ValueError(f"extra_subscribers must be 0..{EXTRA_SUBSCRIBERS_MAX}, not {extra_subscribers}")
        self.extra_subscribers = extra_subscribers
        if reversal_policy not in REVERSAL_POLICIES:
            raise ValueError(f"reversal_policy must be one of {REVERSAL_POLICIES}, not {reversal_policy!r}")
        self.reversal_policy = reversal_policy
        self.db_path = str(db_path)
        if self.db_path != ":memory:":
            # The CLI's default ledger lives under var/, which a fresh checkout
            # lacks.  Blocking, but one mkdir at construction (start-up) only.
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock if clock is not None else reactor
        self.log = (log if log is not None else structlog.get_logger()).bind(component="telecom_sim")
        # isolation_level=None: we issue BEGIN ourselves, so reads and writes
        # of one operation share one transaction.
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.db_path,
            check_same_thread=False,
            isolation_level=None,
            cp_min=1,
            cp_max=1,
            cp_reactor=reactor,
            cp_openfun=_configure_connection,
        )

    def start(self) -> Deferred[None]:
        """Create and seed the ledger; the pool starts with the reactor."""
        self._pool.start()
        return self._run(ledger_create, self.extra_subscribers)

    def close(self) -> None:
        """Stop the database thread (joins an idle thread: brief)."""
        self._pool.close()

    def _now(self) -> str:
        return _utc_iso(self._clock.seconds())

    def _run(self, function: Callable[..., Any], *args) -> Deferred:
        def transaction(txn):
            txn.execute("BEGIN IMMEDIATE")
            return function(txn, *args)

        return self._pool.runInteraction(transaction)

    def get_bills(self, subscriber: str, bill_number: str | None = None) -> Deferred[SubscriberBills]:
        return self._run(ledger_get_bills, subscriber, bill_number)

    def post_payment(self, request: PostPaymentRequest) -> Deferred[tuple[str, str, int]]:
        return self._run(ledger_post_payment, request, self._now())

    def payment_status(self, payment_id: str) -> Deferred[PaymentStatusRecord]:
        return self._run(ledger_payment_status, payment_id)

    def reverse_payment(self, payment_id: str) -> Deferred[str]:
        return self._run(ledger_reverse_payment, payment_id, self.reversal_policy, self._now())

    def postings(self) -> Deferred[list[Posting]]:
        return self._run(ledger_postings)

    def bills(self, subscriber: str) -> Deferred[SubscriberBills]:
        """Every bill of the subscriber with its outstanding amount."""
        return self._run(ledger_subscriber_bills, subscriber)

    def bill(self, subscriber: str, bill_number: str | None = None) -> Deferred[LedgerBill]:
        """The named bill of the subscriber, or their oldest bill."""

        def pick(found: SubscriberBills) -> LedgerBill:
            for b in found.bills:
                if bill_number is None or b.bill_number == bill_number:
                    return b
            raise KeyError(f"no bill {bill_number!r} for {subscriber}")

        return self.bills(subscriber).addCallback(pick)


# --- the SOAP front end -------------------------------------------------------

def _text(element: ET.Element, local: str, *, required: bool = True) -> str | None:
    try:
        return soap.child_text(element, TELECOM_NS, local, required=required)
    except soap.SoapDecodeError as exc:
        raise TelecomFault("INVALID_REQUEST", str(exc)) from exc


def _response(operation: str) -> ET.Element:
    return ET.Element(soap.qname(TELECOM_NS, operation + "Response"))


def _sub(parent: ET.Element, local: str, text: str) -> None:
    soap.sub_text(parent, TELECOM_NS, local, text)


async def handle_operation(simulator: TelecomSimulator, operation: str, element: ET.Element) -> ET.Element:
    """Decode one request element, run it on the ledger, encode the answer."""
    answer = _response(operation)
    if operation == "GetBills":
        subscriber = _text(element, "SubscriberNumber")
        found = await simulator.get_bills(subscriber, _text(element, "BillNumber", required=False) or None)
        _sub(answer, "SubscriberNumber", found.subscriber)
        _sub(answer, "CustomerName", found.customer_name)
        bills = ET.SubElement(answer, soap.qname(TELECOM_NS, "Bills"))
        for b in found.bills:
            bill = ET.SubElement(bills, soap.qname(TELECOM_NS, "Bill"))
            _sub(bill, "BillNumber", b.bill_number)
            _sub(bill, "AmountDue", str(b.outstanding))
            _sub(bill, "DueDate", b.due_date)
            _sub(bill, "Currency", b.currency)
    elif operation == "PostPayment":
        amount_text = _text(element, "Amount")
        if not amount_text.lstrip("-").isdigit():
            raise TelecomFault("INVALID_AMOUNT", f"Amount {amount_text!r} is not an integer")
        request = PostPaymentRequest(
            payment_id=_text(element, "PaymentId"),
            subscriber=_text(element, "SubscriberNumber"),
            bill_number=_text(element, "BillNumber", required=False) or None,
            amount=int(amount_text),
            currency=_text(element, "Currency"),
            paid_at=_text(element, "PaidAt"),
            channel=_text(element, "Channel"),
        )
        if not request.payment_id:
            raise TelecomFault("INVALID_REQUEST", "empty PaymentId")
        receipt, bill_number, amount = await simulator.post_payment(request)
        _sub(answer, "PaymentId", request.payment_id)
        _sub(answer, "ReceiptNumber", receipt)
        _sub(answer, "BillNumber", bill_number)
        _sub(answer, "AmountPosted", str(amount))
    elif operation == "GetPaymentStatus":
        record = await simulator.payment_status(_text(element, "PaymentId"))
        _sub(answer, "PaymentId", record.payment_id)
        _sub(answer, "Status", record.status)
        if record.status != "NOT_FOUND":
            _sub(answer, "ReceiptNumber", record.receipt_number)
            _sub(answer, "Amount", str(record.amount))
    elif operation == "ReversePayment":
        payment_id = _text(element, "PaymentId")
        result = await simulator.reverse_payment(payment_id)
        _sub(answer, "PaymentId", payment_id)
        _sub(answer, "Result", result)
    else:
        raise TelecomFault("INVALID_REQUEST", f"unknown operation {operation}")
    return answer


OPERATIONS = ("GetBills", "PostPayment", "GetPaymentStatus", "ReversePayment")


def _fire_all(waiters: list[Deferred[None]]) -> None:
    pending = list(waiters)
    waiters.clear()
    for waiter in pending:
        waiter.callback(None)


class TelecomResource(resource.Resource):
    """The well-behaved biller: ``POST /BillingService``.

    Subclasses change one step: :meth:`answer` (what to reply, and when) or
    :meth:`deliver` (how the reply goes out).
    """

    isLeaf = True
    soap_action_prefix = DEFAULT_SOAP_ACTION_PREFIX

    def __init__(self, simulator: TelecomSimulator):
        super().__init__()
        self.simulator = simulator
        self.log = simulator.log
        self.received = 0
        self.abandoned = 0
        self._received_waiters: list[Deferred[None]] = []
        self._abandon_waiters: list[Deferred[None]] = []

    def when_received(self) -> Deferred[None]:
        """Fires when the next request arrives (lets tests act while a slow
        biller holds a request, without sleeping)."""
        d: Deferred[None] = Deferred()
        self._received_waiters.append(d)
        return d

    def when_abandoned(self) -> Deferred[None]:
        """Fires the next time a client goes away before getting its answer
        (lets tests prove a cancelled request really closed the connection)."""
        d: Deferred[None] = Deferred()
        self._abandon_waiters.append(d)
        return d

    def render_POST(self, request: server.Request):
        finished = {"lost": False}

        def lost(_failure):
            finished["lost"] = True
            self.abandoned += 1
            _fire_all(self._abandon_waiters)

        request.notifyFinish().addErrback(lost)
        body = request.content.read(soap.MAX_ENVELOPE_BYTES + 1)
        action = (request.getHeader(b"soapaction") or b"").decode("latin-1").strip('"')
        d = self.answer(action, body)

        def send(result: tuple[int, bytes]) -> None:
            if not finished["lost"]:
                self.deliver(request, *result)

        d.addCallback(send)
        d.addErrback(lambda f: self.log.error("telecom_sim_reply_failed", exc_info=(f.type, f.value, f.tb)))
        # Signalled once the request is in hand (a slow biller's timer is set).
        self.received += 1
        _fire_all(self._received_waiters)
        return server.NOT_DONE_YET

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        """(HTTP status, SOAP body) for one request; faults are answers too."""
        return Deferred.fromCoroutine(self._answer(action, body))

    async def _answer(self, action: str, body: bytes) -> tuple[int, bytes]:
        try:
            try:
                element = soap.parse_envelope(body)
            except soap.SoapDecodeError as exc:
                raise TelecomFault("INVALID_REQUEST", str(exc)) from exc
            operation = soap.local_name(element.tag)
            if soap.namespace_of(element.tag) != TELECOM_NS or operation not in OPERATIONS:
                raise TelecomFault("INVALID_REQUEST", f"unknown operation {element.tag}")
            if action != self.soap_action_prefix + operation:
                raise TelecomFault("INVALID_REQUEST", f"SOAPAction {action!r} does not match {operation}")
            reply = await handle_operation(self.simulator, operation, element)
            self.log.info("telecom_sim_answered", operation=operation)
            return 200, soap.build_envelope(reply)
        except TelecomFault as fault:
            self.log.info("telecom_sim_fault", code=fault.code, detail=fault.message)
            return 500, soap.build_fault_envelope(fault.as_soap_fault(), TELECOM_NS)
        except Exception:
            # Every request gets an answer; the traceback stays in our log.
            self.log.exception("telecom_sim_internal_error")
            fault = TelecomFault("INTERNAL", "internal error", fault_code="Server")
            return 500, soap.build_fault_envelope(fault.as_soap_fault(), TELECOM_NS)

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        request.setResponseCode(code)
        request.setHeader(b"content-type", soap.CONTENT_TYPE)
        request.write(body)
        request.finish()


class SlowTelecomResource(TelecomResource):
    """A biller that takes ``delay`` seconds on ``clock`` before it even
    starts on a request -- or, with ``delay=None``, never answers at all.

    The request is still processed after the delay if the client has gone:
    a real biller does not know the gateway gave up (IN_DOUBT).
    """

    def __init__(self, simulator: TelecomSimulator, *, clock, delay: float | None = None):
        super().__init__(simulator)
        self._clock = clock
        self._delay = delay

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        if self._delay is None:
            return Deferred()
        return deferLater(self._clock, self._delay, lambda: None).addCallback(
            lambda _: super(SlowTelecomResource, self).answer(action, body)
        )


# What a crashed front end answers: not SOAP, so the adapter cannot read a fault.
HTML_500 = b"<html><body><h1>500 Internal Server Error</h1></body></html>"


class FailingTelecomResource(TelecomResource):
    """A biller whose front end crashes: HTTP 500 with an HTML page, no
    SOAP fault, nothing recorded."""

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        return succeed((500, HTML_500))


class GarbageTelecomResource(TelecomResource):
    """A biller that processes the request, then answers HTTP 200 with
    bytes that are not XML: the posting exists, the answer is useless."""

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        super().deliver(request, 200, b"<soap:Envelope><<<\x00 not xml")


class PostThenDropResource(TelecomResource):
    """A biller that records the request, then drops the connection without
    answering: the IN_DOUBT case the gateway must resolve by a status query."""

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        self.log.info("telecom_sim_dropping_connection")
        request.channel.transport.abortConnection()


# --- fault injection for chaos tests -----------------------------------------

FAULT_SLOW = "slow"
FAULT_ERROR = "error"
FAULT_DROP_AFTER_POST = "drop_after_post"
FAULT_DROP_BEFORE = "drop_before"
FAULT_KINDS = (FAULT_DROP_BEFORE, FAULT_ERROR, FAULT_SLOW, FAULT_DROP_AFTER_POST)
# What the gateway needs to settle an in-doubt payment: never faulted by the
# posting rates, or an in-doubt payment could never be resolved.
SETTLING_OPERATIONS = ("GetPaymentStatus", "ReversePayment")
FAULTABLE_OPERATIONS = ("PostPayment", "GetBills")

# (code, body) sentinel: drop the connection instead of answering.
_DROP = -1


@dataclass(frozen=True)
class FaultOptions:
    """How often the biller misbehaves, drawn per request from ``seed``.

    The rates are probabilities per request of an operation in
    ``operations`` (PostPayment by default; add GetBills if inquiries should
    suffer too); at most one fault per request, so their sum must be <= 1.

    - ``slow``: wait ``slow_seconds`` on the simulator's clock, then process
      and answer (if the client is still there) -- longer than the gateway's
      biller timeout, it makes payments IN_DOUBT that are in fact posted;
    - ``error``: HTTP 500 with an HTML page, nothing processed;
    - ``drop_after_post``: process (the posting is recorded), then drop the
      connection without an answer;
    - ``drop_before``: drop the connection before processing anything.

    GetPaymentStatus and ReversePayment, which the gateway uses to settle
    in-doubt payments, only fail with ``settle_error_rate`` (HTTP 500,
    nothing done), zero by default.
    """

    seed: int = 0
    slow_rate: float = 0.0
    slow_seconds: float = 12.0
    error_rate: float = 0.0
    drop_after_post_rate: float = 0.0
    drop_before_rate: float = 0.0
    settle_error_rate: float = 0.0
    operations: tuple[str, ...] = ("PostPayment",)

    def __post_init__(self):
        for name in ("slow_rate", "error_rate", "drop_after_post_rate", "drop_before_rate", "settle_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        total = self.slow_rate + self.error_rate + self.drop_after_post_rate + self.drop_before_rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total:g}; at most 1 fault per request")
        if not self.slow_seconds > 0:
            raise ValueError(f"slow_seconds must be positive, not {self.slow_seconds}")
        unknown = set(self.operations) - set(FAULTABLE_OPERATIONS)
        if unknown:
            raise ValueError(f"faults apply to {FAULTABLE_OPERATIONS} only, not {sorted(unknown)}")

    @property
    def active(self) -> bool:
        return any((self.slow_rate, self.error_rate, self.drop_after_post_rate, self.drop_before_rate,
                    self.settle_error_rate))

    def choose(self, rng: random.Random, operation: str) -> str | None:
        """The fault for one request of ``operation`` (None: behave).

        One draw per request whatever the operation, so the sequence of
        faults depends only on the seed and the order of requests.
        """
        draw = rng.random()
        if operation in SETTLING_OPERATIONS:
            return FAULT_ERROR if draw < self.settle_error_rate else None
        if operation not in self.operations:
            return None
        threshold = 0.0
        for kind, rate in ((FAULT_DROP_BEFORE, self.drop_before_rate), (FAULT_ERROR, self.error_rate),
                           (FAULT_SLOW, self.slow_rate), (FAULT_DROP_AFTER_POST, self.drop_after_post_rate)):
            threshold += rate
            if draw < threshold:
                return kind
        return None


class FaultyTelecomResource(TelecomResource):
    """A biller that misbehaves now and then, as :class:`FaultOptions` says.

    Each misbehaviour does what the matching single-fault resource above
    does (``drop_before`` aside, which has none), picked per request by a
    seeded RNG so a chaos run is repeatable; ``fault_counts``
    says how many of each were injected.  The operation is read from the
    SOAPAction header (cheap, before any parsing); a request whose header
    lies about its body gets no fault and is refused by the normal path.
    """

    def __init__(self, simulator: TelecomSimulator, *, clock, faults: FaultOptions):
        super().__init__(simulator)
        self._clock = clock
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self.fault_counts: Counter[str] = Counter()

    def answer(self, action: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        operation = action[len(self.soap_action_prefix):] if action.startswith(self.soap_action_prefix) else ""
        kind = self.faults.choose(self._rng, operation)
        if kind is None:
            return super().answer(action, body)
        self.fault_counts[kind] += 1
        self.log.info("telecom_sim_fault_injected", fault=kind, operation=operation)
        if kind == FAULT_DROP_BEFORE:
            return succeed((_DROP, b""))
        if kind == FAULT_ERROR:
            return succeed((500, HTML_500))
        if kind == FAULT_SLOW:
            return deferLater(self._clock, self.faults.slow_seconds, lambda: None).addCallback(
                lambda _: super(FaultyTelecomResource, self).answer(action, body))
        return super().answer(action, body).addCallback(lambda result: (_DROP, result[1]))

    def deliver(self, request: server.Request, code: int, body: bytes) -> None:
        if code == _DROP:
            request.channel.transport.abortConnection()
            return
        super().deliver(request, code, body)


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's chaos options, for ``billgw telecom-sim`` and runners:
    ``--fault-*`` rates, ``--seed`` and ``--extra-subscribers``."""
    group = parser.add_argument_group("fault injection and load seeding (telecom simulator)")
    group.add_argument("--fault-slow-rate", type=float, default=0.0,
                       help="share of PostPayments answered only after --fault-slow-seconds")
    group.add_argument("--fault-slow-seconds", type=float, default=12.0,
                       help="delay of a slow answer; make it longer than the gateway's biller timeout")
    group.add_argument("--fault-error-rate", type=float, default=0.0,
                       help="share of PostPayments answered HTTP 500 without processing")
    group.add_argument("--fault-drop-after-post-rate", type=float, default=0.0,
                       help="share of PostPayments recorded, then the connection dropped unanswered")
    group.add_argument("--fault-drop-before-rate", type=float, default=0.0,
                       help="share of PostPayments whose connection is dropped before processing")
    group.add_argument("--fault-settle-error-rate", type=float, default=0.0,
                       help="share of GetPaymentStatus/ReversePayment answered HTTP 500 (default 0)")
    group.add_argument("--fault-get-bills", action="store_true",
                       help="apply the --fault-* rates to GetBills (inquiries) too")
    group.add_argument("--seed", type=int, default=0, help="seed of the fault RNG (repeatable runs)")
    group.add_argument("--extra-subscribers", type=int, default=0,
                       help=f"seed N subscribers 0790000000+i, each with one bill of "
                            f"{EXTRA_BILL_AMOUNT // 1000:,}.000 JOD (load tests)")


def fault_options_from_args(args: argparse.Namespace) -> FaultOptions | None:
    """The :class:`FaultOptions` the parsed arguments ask for, or None when
    every rate is zero (the well-behaved biller).  Raises ValueError on
    rates out of range."""
    options = FaultOptions(
        seed=args.seed,
        slow_rate=args.fault_slow_rate,
        slow_seconds=args.fault_slow_seconds,
        error_rate=args.fault_error_rate,
        drop_after_post_rate=args.fault_drop_after_post_rate,
        drop_before_rate=args.fault_drop_before_rate,
        settle_error_rate=args.fault_settle_error_rate,
        operations=("PostPayment", "GetBills") if args.fault_get_bills else ("PostPayment",),
    )
    return options if options.active else None


def build_site(reactor, service: resource.Resource) -> server.Site:
    """A Site with the service at the spec's path; anything else is 404."""
    root = resource.Resource()
    root.putChild(SERVICE_PATH.strip("/").encode("ascii"), service)
    site = server.Site(root, reactor=reactor)
    site.noisy = False
    return site


async def _listen(reactor, endpoint_description, db_path, reversal_policy, resource_class, clock, log,
                  extra_subscribers=0):
    simulator = TelecomSimulator(reactor, db_path, reversal_policy=reversal_policy, clock=clock, log=log,
                                 extra_subscribers=extra_subscribers)
    try:
        await simulator.start()
        service = resource_class(simulator)
        simulator.resource = service
        endpoint = serverFromString(reactor, endpoint_description)
        port = await endpoint.listen(build_site(reactor, service))
    except BaseException:
        simulator.close()
        raise
    simulator.log.info("telecom_sim_listening", address=str(port.getHost()), db_path=str(db_path),
                       reversal_policy=reversal_policy, resource=resource_class.__name__
                       if isinstance(resource_class, type) else repr(resource_class))
    return port, simulator


def listen_telecom_sim(
    reactor,
    endpoint_description: str,
    *,
    db_path: str | Path,
    reversal_policy: str = "allowed",
    resource_class: Callable[[TelecomSimulator], resource.Resource] = TelecomResource,
    clock=None,
    log=None,
    faults: FaultOptions | None = None,
    extra_subscribers: int = 0,
) -> Deferred[tuple[Any, TelecomSimulator]]:
    """Start the simulator and serve it on ``endpoint_description``
    (e.g. ``tcp:0:interface=127.0.0.1``).

    ``resource_class`` picks the behaviour; for the ones that take options
    pass a factory, e.g. ``functools.partial(SlowTelecomResource,
    clock=clock, delay=None)``.  The resource is kept on
    ``simulator.resource``.  Fires with ``(listening_port, simulator)``; stop
    with ``port.stopListening()`` then ``simulator.close()``.  Fails at once
    (with the database closed) if the ledger or the port cannot be opened.

    ``faults`` (with the default ``resource_class``) serves a
    :class:`FaultyTelecomResource` whose delays run on ``clock``;
    ``extra_subscribers`` seeds that many load-test subscribers.
    """
    if faults is not None:
        if resource_class is not TelecomResource:
            raise ValueError("faults= replaces resource_class=; pass one or the other")
        resource_class = functools.partial(FaultyTelecomResource, clock=clock if clock is not None else reactor,
                                           faults=faults)
    return Deferred.fromCoroutine(
        _listen(reactor, endpoint_description, db_path, reversal_policy, resource_class, clock, log,
                extra_subscribers)
    )
