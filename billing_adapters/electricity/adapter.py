"""The ``electricity`` adapter kind: a mainframe-style host over one
persistent TCP link of fixed-width EBCDIC records.

The link (:mod:`billgw.billing_adapters.transports.tcp_records`) is opened
by :meth:`ElectricityAdapter.start`, kept up with back-off, and closed by
:meth:`stop`; the records are :mod:`.records`' copybook; what each answer
means for the money is :mod:`.answers`.  A payment is idempotent on its
payment id at the host: a repeat gets the first answer's receipt.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Callable, Mapping

import structlog
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint
from twisted.python.failure import Failure

from billgw.billing_adapters.interface import (
    BillerCapabilities,
    BillerDeclined,
    BillerError,
    BillerHealth,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillInquiryResult,
    BillQuery,
    LedgerEntry,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    ReversalConfirmation,
)
from billgw.billing_adapters.transports.tcp_records import LinkSettings, RecordLink

from . import answers
from .copybook import RecordError
from .records import MAX_SEQUENCE, Record, RecordCodec


class HostDialect:
    """The link's view of the records (:class:`~..tcp_records.LinkDialect`)."""

    def __init__(self, codec: RecordCodec, *, user: str, password: str, terminal: str):
        self.codec = codec
        self._credentials = {"user": user, "password": password, "terminal": terminal}

    def sign_on(self, sequence: int) -> bytes:
        return self.codec.encode("SGON", sequence, **self._credentials)

    def sign_on_refusal(self, answer: bytes) -> str | None:
        try:
            record = self.codec.decode(answer)
        except RecordError as exc:
            return f"unreadable sign-on answer: {exc}"
        if record.kind == "REJT":
            return f"host {record['error_code']}: {record['message']}"
        if record.kind != "SGOA":
            return f"answered {record.kind} to the sign-on"
        return None if record["result"] == "00" else f"result {record['result']}: {record['message']}"

    def heartbeat(self, sequence: int, now: _dt.datetime) -> bytes:
        return self.codec.encode("HBRQ", sequence, sent_at=int(now.strftime("%Y%m%d%H%M%S")))

    def sequence_of(self, record: bytes) -> int:
        return self.codec.header(record)[1]

    def unsolicited(self, record: bytes) -> bytes | None:
        """The host's own heartbeat is answered; nothing else is expected."""
        decoded = self.codec.decode(record)
        if decoded.kind == "HBRQ":
            return self.codec.encode("HBRA", decoded.sequence, sent_at=decoded["sent_at"])
        return None


class ElectricityAdapter:
    """:class:`~billgw.billing_adapters.interface.BillerAdapter` (plus
    BillerLifecycle and LedgerReading) for the electricity host."""

    def __init__(self, reactor, *, host: str, port: int, user: str, password: str, terminal: str = "BILLGW01",
                 code_page: str = "cp037", framing: str = "length2", record_length: int | None = None,
                 max_record: int = 4096, connect_timeout: float = 5.0, request_timeout: float = 15.0,
                 heartbeat_interval: float = 30.0, heartbeat_timeout: float = 10.0,
                 reconnect_initial: float = 1.0, reconnect_max: float = 60.0, start_wait: float | None = None,
                 service_codes: Mapping[str, str] | None = None, error_codes: Mapping[str, str] | None = None,
                 currency_exponent: int = 3, supports_status: bool = True, supports_reversal: bool = True,
                 ledger: str | None = None, clock=None, log: Any = None, endpoint=None,
                 jitter: Callable[[], float] | None = None):
        self._clock = clock if clock is not None else reactor
        self.codec = RecordCodec(code_page, record_length if framing == "fixed" else None)
        self._services = dict(service_codes or {})
        self._codes = {**answers.DEFAULT_ERROR_CODES, **(error_codes or {})}
        self._exponent = currency_exponent
        self.ledger_path = ledger
        self.capabilities = BillerCapabilities(
            can_reverse=supports_reversal, can_query_status=supports_status,
            extra={"protocol": "fixed-width EBCDIC records over TCP", "code_page": self.codec.code_page})
        self._log = (log if log is not None else structlog.get_logger()).bind(
            biller_adapter="electricity", biller_host=f"{host}:{port}")
        if endpoint is None:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
        dialect = HostDialect(self.codec, user=user, password=password, terminal=terminal)
        self.link = RecordLink(self._clock, endpoint, dialect, LinkSettings(
            framing=framing, record_length=record_length, max_record=max_record, max_sequence=MAX_SEQUENCE,
            request_timeout=request_timeout, sign_on_timeout=request_timeout,
            heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout,
            reconnect_initial=reconnect_initial, reconnect_max=reconnect_max,
            start_wait=start_wait if start_wait is not None else connect_timeout,
        ), log=self._log, jitter=jitter, name=f"{host}:{port}")

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        return self.link.start()

    def stop(self) -> Deferred[None]:
        return self.link.stop()

    def health(self) -> BillerHealth:
        return self.link.health()

    # --- the four calls -------------------------------------------------------

    def inquire(self, query: BillQuery) -> Deferred[BillInquiryResult]:
        try:
            answers.check_account(query.billing_number)
        except BillerDeclined as exc:
            return fail(exc)
        values = {"service": self._service(query.service_code), "account": query.billing_number,
                  "bill_number": query.bill_number or ""}
        return self._call("inquire", "INQR", values,
                          lambda r: answers.inquiry_result(r, query, self._exponent, self._codes),
                          billing_number=query.billing_number)

    def pay(self, order: PaymentOrder) -> Deferred[PaymentConfirmation]:
        try:
            values = answers.payment_values(order, self._service(order.service_code), self._exponent)
        except BillerDeclined as exc:
            return fail(exc)
        except ValueError as exc:
            return fail(BillerUnavailable(f"payment cannot be put in a record: {exc}"))
        return self._call("pay", "PAYR", values,
                          lambda r: answers.payment_confirmation(r, order, self._exponent, self._codes),
                          payment_id=order.payment_id, amount=order.amount)

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        return self._call("status", "STAR", {"payment_id": payment_id},
                          lambda r: answers.payment_status(r, payment_id, self._exponent), payment_id=payment_id)

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        return self._call("reverse", "REVR", {"payment_id": payment_id, "reason": "RV"},
                          lambda r: answers.reversal_confirmation(r, payment_id, self._codes),
                          payment_id=payment_id)

    def _service(self, code: str) -> str:
        return self._services.get(code, code)

    def _call(self, operation: str, kind: str, values: dict, judge: Callable[[Record], Any], **context) -> Deferred:
        log = self._log.bind(operation=operation, **context)
        started = self._clock.seconds()
        d = self.link.request(kind, lambda sequence: self.codec.encode(kind, sequence, **values))

        def decoded(payload: bytes):
            try:
                record = self.codec.decode(payload)
            except RecordError as exc:
                raise BillerOutcomeUnknown(f"garbled answer: {exc}") from exc
            return judge(record)

        def done(result):
            elapsed_ms = round((self._clock.seconds() - started) * 1000)
            if not isinstance(result, Failure):
                log.info("biller_call_done", outcome="ok", elapsed_ms=elapsed_ms)
                return result
            if result.check(BillerDeclined):
                log.info("biller_call_done", outcome="declined", reason=result.value.reason.value,
                         detail=result.value.detail, elapsed_ms=elapsed_ms)
            elif result.check(BillerError, CancelledError):
                log.warning("biller_call_done", outcome=type(result.value).__name__, detail=str(result.value),
                            elapsed_ms=elapsed_ms)
            else:
                log.error("biller_call_failed", elapsed_ms=elapsed_ms, exc_info=(result.type, result.value, result.tb))
                return Failure(BillerOutcomeUnknown(f"adapter error: {result.type.__name__}"))
            return result

        return d.addCallback(decoded).addBoth(done)

    # --- the ledger, offline ---------------------------------------------------

    def read_ledger(self, source: str | None = None) -> list[LedgerEntry]:
        """The host's payment extract (the simulator's SQLite ledger file).
        Blocks: for ``billgw audit``, never on a running reactor's thread."""
        from .ledger import read_host_ledger

        return read_host_ledger(source or self.ledger_path)
