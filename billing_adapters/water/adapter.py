"""The ``water`` adapter kind: a biller whose integration is tables in its
own relational database, booked by its own batch (contract v2).

The adapter reads open bills from the biller's bills table and inserts each
payment into its intake table through :class:`~billgw.billing_adapters.
transports.sql.SqlTransport` (its own engine and bounded threads).  The
committed intake row is the answer :class:`PaymentAccepted`: the gateway
approves the ATM and waits, polling :meth:`WaterBillerAdapter.status`, for
the biller's batch to mark the row posted (the receipt SMS goes out then) or
rejected (a person refunds).  Table names, column names and code values come
from the configuration (:mod:`.mapping`); the work on the tables is in
:mod:`.intake`.

What an ending means for the money is the transport's rule: a failure before
COMMIT recorded nothing (unavailable), a failed COMMIT is "outcome unknown",
and a caller's timeout is "outcome unknown" too -- settled by a status query.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

import structlog
from twisted.internet.defer import Deferred, succeed

from billgw.billing_adapters.interface import (
    BillerCapabilities,
    BillerHealth,
    BillInquiryResult,
    BillQuery,
    HealthState,
    LedgerEntry,
    LedgerUnavailable,
    PaymentAccepted,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    ReversalConfirmation,
)
from billgw.billing_adapters.transports.sql import SqlTransport, run_blocking

from billgw.billing_adapters.settings_schema import Setting, SettingsError, positive_int, positive_number

from . import intake
from .mapping import MAPPING_SCHEMA, WaterSettings, WaterTables, sql_name


def _iso(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class WaterBillerAdapter:
    """A database biller: bills read, payments inserted, its batch records them."""

    capabilities = BillerCapabilities(can_reverse=True, can_query_status=True,
                                      extra={"records_later": True})

    def __init__(self, reactor, tables: WaterTables, url: str, *, currency: str = "400", pool_size: int = 2,
                 max_queued: int = 32, lock_timeout: float = 5.0, statement_timeout: float = 10.0,
                 connect_timeout: float = 5.0, clock=None, log=None, name: str = "water"):
        self.tables = tables
        self.currency = currency
        self._clock = clock or reactor
        self._log = log or structlog.get_logger("billgw.water")
        self.transport = SqlTransport(reactor, url, pool_size=pool_size, max_queued=max_queued,
                                      lock_timeout=lock_timeout, statement_timeout=statement_timeout,
                                      connect_timeout=connect_timeout, name=f"biller-sql-{name}",
                                      log=self._log)

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        self.transport.start()  # no connection yet: the first call opens one
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return self.transport.stop()

    def health(self) -> BillerHealth:
        if not self.transport.running:
            return BillerHealth(HealthState.STOPPED)
        return BillerHealth(HealthState.UP, in_flight=self.transport.in_flight)

    # --- the four calls --------------------------------------------------------------

    def inquire(self, query: BillQuery) -> Deferred[BillInquiryResult]:
        return self.transport.read(intake.read_bills, self.tables, query.billing_number, query.bill_number,
                                   self.currency)

    def pay(self, order: PaymentOrder) -> Deferred[PaymentAccepted | PaymentConfirmation]:
        return self.transport.write(self._insert, order, _iso(self._clock.seconds()))

    def _insert(self, conn, order: PaymentOrder, paid_at: str):
        return intake.insert_payment(conn, self.tables, order, paid_at=paid_at, currency=self.currency)

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        return self.transport.read(intake.payment_status, self.tables, payment_id)

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        return self.transport.write(self._reverse, payment_id, _iso(self._clock.seconds()))

    def _reverse(self, conn, payment_id: str, at: str):
        return intake.reverse_payment(conn, self.tables, payment_id, at=at)

    # --- the audit ---------------------------------------------------------------------

    def read_ledger(self, source: str | None = None) -> list[LedgerEntry]:
        return read_water_ledger(self.tables, source or self.transport.url)


def read_water_ledger(tables: WaterTables, url: str, *, timeout: float = 30.0) -> list[LedgerEntry]:
    """The intake table as the audit compares it (blocking; offline tools only)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return run_blocking(url, lambda conn: intake.ledger(conn, tables), timeout=timeout)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise LedgerUnavailable(f"cannot read the water biller's intake at {_shown(url)}: "
                                f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}") from None


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- an unparsable URL is shown as nothing rather than leaked
        return "<url>"


def build_from_settings(reactor, log, *, context: Any, **settings: Any) -> WaterBillerAdapter:
    """The registry's builder: ``settings`` checked by :data:`SETTINGS`."""
    tables = WaterTables.from_settings(settings, schema=settings["schema"])
    return WaterBillerAdapter(
        reactor, tables, settings["url"], currency=settings["currency"], pool_size=settings["pool_size"],
        max_queued=settings["max_queued"], lock_timeout=settings["lock_timeout"],
        statement_timeout=settings["statement_timeout"], connect_timeout=settings["connect_timeout"],
        clock=context.clock, log=log, name=context.biller_code or "water")


def _sql_url(path: str, value: Any) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(value, str) or not value:
        raise SettingsError(path, f"must be an SQLAlchemy database URL, not {value!r}")
    try:
        make_url(value)
    except ArgumentError:
        raise SettingsError(path, "must be an SQLAlchemy database URL, e.g. sqlite:///var/water.sqlite "
                                  "or postgresql+psycopg://user@host/db") from None
    return value


def _currency(path: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isdigit():
        raise SettingsError(path, f"must be an ISO 4217 numeric code such as \"400\", not {value!r}")
    return value


def _schema_name(path: str, value: Any) -> str:
    return sql_name(path, value)


SETTINGS = WaterSettings({
    "url": Setting(_sql_url, required=True, doc="the biller's database (SQLAlchemy URL)"),
    "schema": Setting(_schema_name, default=None, doc="the schema holding the biller's tables (PostgreSQL)"),
    "currency": Setting(_currency, default="400", doc="the currency of the biller's amounts (ISO numeric)"),
    "pool_size": Setting(positive_int, default=2, doc="threads (and connections) to the biller's database"),
    "max_queued": Setting(positive_int, default=32, doc="calls waiting for a thread at most; more: 91 at once"),
    "lock_timeout": Setting(positive_number, default=5.0, doc="seconds a call waits for a lock of the biller's"),
    "statement_timeout": Setting(positive_number, default=10.0, doc="seconds a statement may run (PostgreSQL)"),
    "connect_timeout": Setting(positive_number, default=5.0, doc="seconds to open a connection"),
    **MAPPING_SCHEMA,
})
