"""The ``json`` adapter kind: any biller implementing the JSON biller
interface (docs/billers.md), driven by configuration alone.

What an answer means for the money, per call:

- **inquiry, payment**: a 2xx is decoded (garbage: outcome unknown); a
  refusal status (400, 404, 422...) is a decline -- with the error body's
  code when there is one; every other status (408, 409, 429, 5xx...) is
  "outcome unknown";
- **status**: only a 2xx answers; anything else is "outcome unknown" (a
  status query cannot be declined: it is asked again later);
- **reversal**: a 2xx answers; a refusal with ``REVERSAL_NOT_PERMITTED`` is
  the biller's policy (a decline: a person refunds); anything else is
  "outcome unknown" and the reversal is retried.

``capabilities`` comes from the settings (``supports_status``,
``supports_reversal``); :class:`~billgw.billing_adapters.guarded.GuardedAdapter`
makes sure an unsupported call is never sent.
"""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping, TypeVar

import structlog
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from billgw.billing_adapters.interface import (
    BillerCapabilities,
    BillerDeclined,
    BillerError,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillInquiryResult,
    BillQuery,
    DeclineReason,
    LedgerEntry,
    LedgerUnavailable,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    ReversalConfirmation,
)
from billgw.billing_adapters.transports import http

from . import codec

_T = TypeVar("_T")

# How each call treats a refusal status (see the module docstring).
_DECLINES = "declines"  # inquiry, payment: a refusal is a decline
_NEVER = "never"  # status: nothing but a 2xx is an answer
_POLICY_ONLY = "policy_only"  # reversal: only REVERSAL_NOT_PERMITTED is a decline

LEDGER_TIMEOUT = 30.0  # seconds per page of an offline ledger read


def judge(answer: http.HttpAnswer, decode: Callable[[bytes], _T], refusal: str,
          extra_codes: Mapping[str, DeclineReason] | None = None) -> _T:
    """One HTTP answer as a result or the interface error it means (pure)."""
    meaning = http.status_meaning(answer.code)
    if meaning == http.ANSWERED:
        try:
            return decode(answer.body)
        except codec.JsonDecodeError as exc:
            raise BillerOutcomeUnknown(f"HTTP {answer.code} with an unusable answer: {exc}") from exc
    error = codec.decode_error(answer.body)
    named = f"HTTP {answer.code}" + (f" {error[0]}" if error else "")
    if meaning == http.REFUSED:
        if refusal == _DECLINES:
            if error is None:
                raise BillerDeclined(DeclineReason.OTHER, f"HTTP {answer.code} without an error body")
            raise codec.decline_for(*error, extra=extra_codes)
        if refusal == _POLICY_ONLY and error is not None:
            decline = codec.decline_for(*error, extra=extra_codes)
            if decline.reason is DeclineReason.NOT_PERMITTED:
                raise decline
    raise BillerOutcomeUnknown(f"{named}: the biller may hold the request")


class JsonBillerAdapter:
    """:class:`~billgw.billing_adapters.interface.BillerAdapter` for a JSON biller."""

    def __init__(self, reactor, url: str, *, service_names: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None,
                 error_codes: Mapping[str, DeclineReason] | None = None,
                 supports_status: bool = True, supports_reversal: bool = True,
                 connect_timeout: float = 5.0, pool_size: int = 4, timeout: float | None = None,
                 idle_timeout: float = 60.0, ledger_page_size: int = 500, clock=None, log: Any = None):
        self._clock = clock if clock is not None else reactor
        self.url = url.rstrip("/")
        self._service_names = dict(service_names or {})
        self._headers = {k: v for k, v in (headers or {}).items()}
        self._error_codes = dict(error_codes or {})
        self._page_size = ledger_page_size
        self.capabilities = BillerCapabilities(
            can_reverse=supports_reversal, can_query_status=supports_status,
            extra={"protocol": "json-bill-pull", "interface_version": codec.INTERFACE_VERSION})
        self._log = (log if log is not None else structlog.get_logger()).bind(biller_adapter="json", biller_url=url)
        self.transport = http.HttpTransport(
            reactor, pool_size=pool_size, connect_timeout=connect_timeout, timeout=timeout,
            idle_timeout=idle_timeout, max_body=codec.MAX_MESSAGE_BYTES, clock=self._clock, log=self._log)

    def _service(self, code: str) -> str:
        return self._service_names.get(code, code)

    # --- the four calls -------------------------------------------------------

    def inquire(self, query: BillQuery) -> Deferred[BillInquiryResult]:
        return self._call("inquire", b"POST", codec.INQUIRY_PATH,
                          codec.encode_inquiry(query, self._service(query.service_code)),
                          lambda data: codec.decode_inquiry(data, query), _DECLINES,
                          billing_number=query.billing_number)

    def pay(self, order: PaymentOrder) -> Deferred[PaymentConfirmation]:
        return self._call("pay", b"POST", codec.PAYMENTS_PATH,
                          codec.encode_payment(order, self._service(order.service_code)),
                          lambda data: codec.decode_payment(data, order.payment_id), _DECLINES,
                          payment_id=order.payment_id, amount=order.amount)

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        return self._call("status", b"GET", codec.payment_path(self._path_id(payment_id)), b"",
                          lambda data: codec.decode_status(data, payment_id), _NEVER, payment_id=payment_id)

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        return self._call("reverse", b"POST", codec.reversal_path(self._path_id(payment_id)),
                          codec.encode_reversal(payment_id),
                          lambda data: codec.decode_reversal(data, payment_id), _POLICY_ONLY,
                          payment_id=payment_id)

    def close(self) -> Deferred[None]:
        return self.transport.close()

    @staticmethod
    def _path_id(payment_id: str) -> str:
        if not codec.PAYMENT_ID.fullmatch(payment_id):
            raise BillerUnavailable(f"payment id {payment_id!r} cannot travel in a URL path")
        return payment_id

    def _call(self, operation: str, method: bytes, path: str, body: bytes, decode, refusal: str,
              **context) -> Deferred:
        log = self._log.bind(operation=operation, **context)
        started = self._clock.seconds()
        headers = Headers({b"Content-Type": [codec.CONTENT_TYPE], b"Accept": [b"application/json"],
                           b"X-Interface-Version": [codec.INTERFACE_VERSION.encode()]})
        for name, value in self._headers.items():
            headers.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
        d = self.transport.request(method, (self.url + path).encode("ascii"), headers=headers, body=body)
        d.addCallback(judge, decode, refusal, self._error_codes)

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
                log.error("biller_call_failed", elapsed_ms=elapsed_ms,
                          exc_info=(result.type, result.value, result.tb))
                return Failure(BillerOutcomeUnknown(f"adapter error: {result.type.__name__}"))
            return result

        return d.addBoth(done)

    # --- the ledger, offline ---------------------------------------------------

    def read_ledger(self, source: str | None = None) -> list[LedgerEntry]:
        """Every payment the biller holds, through the interface's
        reconciliation listing (``GET /payments``, paged).  Blocks: for
        ``billgw audit``, never on a running reactor's thread."""
        return read_json_ledger(source or self.url, page_size=self._page_size, headers=self._headers)


MAX_LEDGER_PAGES = 100_000


def read_json_ledger(url: str, *, page_size: int = 500, headers: Mapping[str, str] | None = None,
                     timeout: float = LEDGER_TIMEOUT) -> list[LedgerEntry]:
    """The reconciliation listing of the JSON biller at ``url`` (blocking)."""
    entries: list[LedgerEntry] = []
    cursor: str | None = None
    base = url.rstrip("/") + codec.PAYMENTS_PATH
    for _ in range(MAX_LEDGER_PAGES):  # a listing whose cursor never ends is refused, not followed forever
        query = {"limit": str(page_size)}
        if cursor:
            query["after"] = cursor
        request = urllib.request.Request(f"{base}?{urllib.parse.urlencode(query)}",
                                         headers={"Accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
                data = response.read(codec.MAX_MESSAGE_BYTES + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise LedgerUnavailable(f"cannot read {base}: {exc}") from None
        try:
            page, cursor = codec.decode_ledger_page(data)
        except codec.JsonDecodeError as exc:
            raise LedgerUnavailable(f"{base}: unusable listing: {exc}") from None
        entries += page
        if cursor is None:
            return entries
    raise LedgerUnavailable(f"{base}: listing longer than {MAX_LEDGER_PAGES} pages")
