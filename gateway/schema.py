"""The journal's tables (SQLAlchemy Core).

``transactions`` holds every 0200 the gateway accepted for processing, keyed
by the gateway's own id (the payment id the biller de-duplicates on), with a
UNIQUE constraint on the acquirer's keys (F32 + F41 + F11 + F7): duplicate
detection rests on the database, not on process memory.  The masked PAN is
the only card data kept.  ``transaction_events`` is the history of state
transitions.  The SMS outbox table belongs to ``billgw.sms.outbox`` and is
written in the same transactions; so do its children ``sms_outbox_parts``
(one row per part the SMSC accepted: message id, submit time, delivery
receipt) and ``sms_outbox_events`` (resends, expiries), migration 0005.

The schema itself is created by the alembic migrations in ``migrations/``;
these definitions are what the code reads and writes.

Two columns hold what could be derived from others, each for a reason:

- ``transactions.response_code`` is F39 of the answer ``response_fields``
  stores whole.  It is the one field of the answer that operators, the
  audit and reports filter and count by (``WHERE response_code = '91'``),
  and plain SQL reaches it the same way on SQLite and PostgreSQL, where a
  JSON path differs between them and needs no index.  It cannot drift from
  the answer: its only writer is ``settle.apply_event``, which sets both
  from the same ``fields`` in one UPDATE.
- ``reversals.state`` mirrors the payment's fate once a payment is found,
  but not before: ``NOT_FOUND`` (the original never reached us) has no
  payment to derive from, and it is what a late original with these keys
  is declined by.  Its other values (ACKED, BILLER_REVERSED,
  NOTHING_TO_REVERSE, EXCEPTION) are written only by ``settle`` in the
  transaction that moves the payment (``_rev_state_for`` and
  ``_move_reversal_rows``: one path), so the row an acquirer's
  reconciliation reads per 0420 never disagrees with the payment it names.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Table,
    UniqueConstraint,
)

from billgw.sms import health as _sms_health  # noqa: F401 (sms_link_health, on the outbox's metadata)
from billgw.sms.outbox import metadata as outbox_metadata

metadata = MetaData()

transactions = Table(
    "transactions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(10), nullable=False),  # inquiry | payment
    Column("mti", String(4), nullable=False),
    Column("processing_code", String(6), nullable=False),
    Column("acquirer_id", String(11), nullable=False),
    Column("forwarder_id", String(11), nullable=True),
    Column("terminal_id", String(8), nullable=False),
    Column("stan", String(6), nullable=False),
    Column("transmission_dt", String(10), nullable=False),
    Column("rrn", String(12), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("masked_pan", String(19), nullable=True),
    # HMAC-SHA-256 of the PAN, for look-ups by card (migration 0007).
    Column("pan_hash", String(64), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("fee", BigInteger, nullable=False, default=0),
    Column("biller_code", String(10), nullable=True),
    Column("service_code", String(10), nullable=True),
    Column("billing_number", String(30), nullable=True),
    Column("bill_number", String(30), nullable=True),
    Column("msisdn", String(15), nullable=True),
    Column("language", String(5), nullable=True),
    Column("state", String(12), nullable=False),
    Column("response_code", String(2), nullable=True),
    Column("response_fields", Text, nullable=True),  # JSON of the answer, replayed to repeats
    Column("auth_code", String(6), nullable=True),
    Column("biller_receipt", String(40), nullable=True),
    Column("settlement_date", String(8), nullable=True),
    Column("detail", String(400), nullable=True),
    # A reversal (0420) arrived while the payment was in flight or in doubt:
    # whatever the biller answers, the payment must end undone.
    Column("reversal_requested", Boolean, nullable=False, default=False),
    # An advice (0220) said the customer was debited: the payment must end posted.
    Column("advice_received", Boolean, nullable=False, default=False),
    Column("advice_response", Text, nullable=True),  # JSON of the 0230 replayed to 0221s
    # The local rule the request broke when it was journaled (an Outcome
    # name, e.g. invalid_amount), NULL when it passed: an advice for such a
    # payment is acknowledged but never posted (an EXCEPTION for a person).
    Column("local_problem", String(40), nullable=True),
    # The business date (YYYYMMDD) the payment settles on, decided when it
    # was journaled (gateway/business_day.py); F15 is its MMDD.
    Column("business_date", String(8), nullable=True),
    # The late surcharge the payment settled (part of ``amount``), and who
    # bore ``fee`` (customer | biller) when it was made.
    Column("surcharge", BigInteger, nullable=False, default=0, server_default="0"),
    Column("fee_bearer", String(8), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("acquirer_id", "terminal_id", "stan", "transmission_dt", name="uq_transactions_acquirer_keys"),
)
Index("ix_transactions_state", transactions.c.state)
Index("ix_transactions_rrn", transactions.c.rrn)
Index("ix_transactions_business_date", transactions.c.business_date)
Index("ix_transactions_pan_hash", transactions.c.pan_hash)

transaction_events = Table(
    "transaction_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_id", String(32), ForeignKey("transactions.id"), nullable=False, index=True),
    Column("from_state", String(12), nullable=True),
    Column("to_state", String(12), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("detail", String(400), nullable=True),
)

# One row per original transaction reversed (0420 and its 0421 repeats),
# keyed by the original's acquirer keys taken from F90 and F41.  Made durable
# before the 0430 goes out; ``transaction_id`` is null when the original was
# never seen (an exception, and a late original with these keys is declined).
reversals = Table(
    "reversals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_id", String(32), ForeignKey("transactions.id"), nullable=True, index=True),
    Column("orig_mti", String(4), nullable=False),
    Column("orig_acquirer_id", String(11), nullable=False),
    Column("orig_terminal_id", String(8), nullable=False),
    Column("orig_stan", String(6), nullable=False),
    Column("orig_transmission_dt", String(10), nullable=False),
    Column("stan", String(6), nullable=False),
    Column("transmission_dt", String(10), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=True),
    Column("state", String(20), nullable=False),
    Column("repeat_count", Integer, nullable=False, default=0),
    Column("response_fields", Text, nullable=True),
    Column("detail", String(400), nullable=True),
    # The original's business date (a late reversal keeps it); the current
    # one when the original is unknown.
    Column("business_date", String(8), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("orig_acquirer_id", "orig_terminal_id", "orig_stan", "orig_transmission_dt",
                     name="uq_reversals_original_keys"),
)

# Store-and-forward work towards billers: postings to complete after an
# advice, status queries for in-doubt payments, reversals.  At most one item
# per (transaction, action); claimed with a lease like the SMS outbox.
biller_outbox = Table(
    "biller_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_id", String(32), ForeignKey("transactions.id"), nullable=False),
    Column("action", String(10), nullable=False),  # POST | STATUS | REVERSE
    Column("state", String(10), nullable=False),  # PENDING | DONE | EXPIRED
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("lease_until", DateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("last_error", String(400), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("transaction_id", "action", name="uq_biller_outbox_transaction_action"),
)
Index("ix_biller_outbox_due", biller_outbox.c.state, biller_outbox.c.next_attempt_at)

# One row per business date opened by a cut-over (an 0800 with F70 = 201):
# the latest is the gateway's business date when it is ahead of the
# schedule (gateway/business_day.py), for every process sharing the database.
business_days = Table(
    "business_days",
    metadata,
    Column("business_date", String(8), primary_key=True),
    Column("opened_at", DateTime, nullable=False),
    Column("opened_by", String(64), nullable=False),
)

ALL_METADATA = (metadata, outbox_metadata)
