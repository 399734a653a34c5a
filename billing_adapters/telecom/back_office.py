"""The telecom biller's back office: the ledger's rules (:mod:`.ledger`) run
on a one-thread ``adbapi.ConnectionPool`` (SQLite), never on the reactor
thread, each call one transaction returning plain dataclasses.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from .ledger import (
    EXTRA_SUBSCRIBERS_MAX,
    REVERSAL_POLICIES,
    LedgerBill,
    PaymentStatusRecord,
    Posting,
    PostPaymentRequest,
    SubscriberBills,
    ledger_create,
    ledger_get_bills,
    ledger_payment_status,
    ledger_post_payment,
    ledger_postings,
    ledger_reverse_payment,
    ledger_subscriber_bills,
)


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
