"""A journal that already holds many payments, written fast, for one bench row.

The target: a gateway whose journal holds 1,000,000 payments stays within
20 % of an empty one's throughput.  Replaying a million payments over the
wire would take most of an hour here, so the rows are written straight into
the SQLite file ``billgw db upgrade`` created: each payment CONFIRMED with
its event and its SENT receipt -- what a day's traffic leaves behind --
generated inside SQLite by a recursive CTE in one transaction (seconds per
100,000 rows, not Python loops).

The simulator never imports the gateway (it talks to it over the wire), so
the columns are read from the database itself (``PRAGMA table_info``):
columns this module does not know (added by a later migration) get their
declared default, or NULL, or -- when NOT NULL without a default -- an
empty value of their type.
"""
from __future__ import annotations

import sqlite3

PREFILL_ACQUIRER = "123455"  # no bench worker uses it: its keys never meet the load's

# Known columns: SQL expressions over n (1..rows) inside the CTE.
_TRANSACTION = {
    "id": "printf('pf%030d', n)", "kind": "'payment'", "mti": "'0200'", "processing_code": "'500000'",
    "acquirer_id": f"'{PREFILL_ACQUIRER}'", "terminal_id": "printf('ATM%05d', 1 + n % 99999)",
    "stan": "printf('%06d', n % 1000000)", "transmission_dt": "printf('%010d', n / 1000000)",
    "rrn": "printf('%012d', n)", "fingerprint": "printf('%064d', n)", "masked_pan": "'476173******0010'",
    "amount": "1000", "currency": "'400'", "fee": "0", "biller_code": "'BENCH'", "service_code": "'ANY'",
    "billing_number": "'0790000000'", "msisdn": "'962790000000'", "language": "'en'", "state": "'CONFIRMED'",
    "response_code": "'00'", "auth_code": "'000001'", "biller_receipt": "printf('BR%010d', n)",
    "settlement_date": "'1202'", "reversal_requested": "0", "advice_received": "0",
    "created_at": "datetime('2026-11-01', printf('+%d seconds', n))",
    "updated_at": "datetime('2026-11-01', printf('+%d seconds', n))",
}
_EVENT = {"transaction_id": "printf('pf%030d', n)", "from_state": "'POSTING'", "to_state": "'CONFIRMED'",
          "at": "datetime('2026-11-01', printf('+%d seconds', n))", "detail": "'prefilled'"}
_SMS = {"payment_id": "printf('pf%030d', n)", "kind": "'receipt'", "msisdn": "'962790000000'",
        "language": "'en'", "text": "'Paid 1.000 JOD to Benchmark Biller'", "state": "'SENT'", "attempts": "1",
        "next_attempt_at": "datetime('2026-11-01', printf('+%d seconds', n))",
        "smsc_message_ids": "printf('%d', n)", "data_coding": "0", "parts": "1",
        "created_at": "datetime('2026-11-01', printf('+%d seconds', n))",
        "updated_at": "datetime('2026-11-01', printf('+%d seconds', n))"}


def _empty_of(declared: str) -> str:
    declared = declared.upper()
    return "0" if any(k in declared for k in ("INT", "BOOL", "NUM", "REAL", "FLOA", "DOUB")) else "''"


def _insert(db: sqlite3.Connection, table: str, known: dict[str, str], rows: int) -> None:
    columns, values = [], []
    for _cid, name, declared, notnull, default, pk in db.execute(f"PRAGMA table_info({table})"):
        if name in known:
            expression = known[name]
        elif pk and "INT" in declared.upper():
            continue  # an INTEGER PRIMARY KEY numbers itself
        elif default is not None:
            expression = default
        elif notnull:
            expression = _empty_of(declared)
        else:
            continue
        columns.append(name)
        values.append(expression)
    db.execute(f"WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {int(rows)}) "
               f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM c")


def prefill(path: str, rows: int) -> None:
    """Write ``rows`` settled payments into the (migrated) journal at ``path``."""
    if rows < 1:
        raise ValueError("rows must be positive")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")  # a fixture, not a payment: rewritten if a crash interrupts it
        db.execute("BEGIN")
        _insert(db, "transactions", _TRANSACTION, rows)
        _insert(db, "transaction_events", _EVENT, rows)
        _insert(db, "sms_outbox", _SMS, rows)
        db.execute("COMMIT")
    finally:
        db.close()


def count(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
    finally:
        db.close()
