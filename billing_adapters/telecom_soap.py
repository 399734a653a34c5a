"""Adapter for the telecom biller's legacy SOAP 1.1 interface.

The contract is ``telecom_soap.md`` beside this file.  The module has two
layers, as Twisted Names does: pure encode/decode functions for each operation
(testable on bytes), and :class:`TelecomSoapAdapter`, which moves those bytes
over HTTP and turns every way an exchange can end into one of the interface's
outcomes.  What matters for the money is telling "certainly not sent"
(:class:`BillerUnavailable`) from "may have been recorded"
(:class:`BillerOutcomeUnknown`), so a payment is never posted twice nor
forgotten.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Callable, TypeVar

import structlog
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from billgw.billing_adapters import soap
from billgw.billing_adapters.transports import http
from billgw.billing_adapters.interface import (
    Bill,
    BillerCapabilities,
    BillerDeclined,
    BillerError,
    BillerOutcomeUnknown,
    BillerUnavailable,
    BillInquiryResult,
    BillQuery,
    DeclineReason,
    LedgerEntry,
    PaymentConfirmation,
    PaymentOrder,
    PaymentStatus,
    PaymentStatusKind,
    ReversalConfirmation,
)

TELECOM_NS = "http://billing.telecom.example/ws/v1"
DEFAULT_SOAP_ACTION_PREFIX = TELECOM_NS + "/"
SERVICE_PATH = "/BillingService"

ET.register_namespace("tb", TELECOM_NS)

# Fault detail codes the biller documents, and what each means to the gateway.
# INTERNAL is deliberately absent: a biller-side error may have happened after
# the posting was written, so it is an unknown outcome, never a decline.
FAULT_REASONS: dict[str, DeclineReason] = {
    "SUBSCRIBER_NOT_FOUND": DeclineReason.UNKNOWN_BILLING_NUMBER,
    "BILL_NOT_FOUND": DeclineReason.BILL_NOT_FOUND,
    "NO_BILL_DUE": DeclineReason.NO_BILL_DUE,
    "BILL_ALREADY_PAID": DeclineReason.BILL_ALREADY_PAID,
    "INVALID_AMOUNT": DeclineReason.INVALID_AMOUNT,
    "REVERSAL_NOT_PERMITTED": DeclineReason.NOT_PERMITTED,
    "DUPLICATE_MISMATCH": DeclineReason.OTHER,
    "INVALID_REQUEST": DeclineReason.OTHER,
}

_T = TypeVar("_T")


def _op(name: str) -> ET.Element:
    return ET.Element(soap.qname(TELECOM_NS, name))


def _expect(element: ET.Element, name: str) -> None:
    if element.tag != soap.qname(TELECOM_NS, name):
        raise soap.SoapDecodeError(f"expected {name}, got {element.tag}")


# --- GetBills ---------------------------------------------------------------

def encode_get_bills(query: BillQuery) -> ET.Element:
    element = _op("GetBills")
    soap.sub_text(element, TELECOM_NS, "SubscriberNumber", query.billing_number)
    if query.bill_number:
        soap.sub_text(element, TELECOM_NS, "BillNumber", query.bill_number)
    return element


def decode_get_bills(element: ET.Element) -> BillInquiryResult:
    _expect(element, "GetBillsResponse")
    bills_element = element.find(soap.qname(TELECOM_NS, "Bills"))
    if bills_element is None:
        raise soap.SoapDecodeError("missing element Bills")
    bills = tuple(
        Bill(
            bill_number=soap.child_text(b, TELECOM_NS, "BillNumber"),
            amount_due=soap.child_int(b, TELECOM_NS, "AmountDue"),
            due_date=soap.child_text(b, TELECOM_NS, "DueDate"),
            currency=soap.child_text(b, TELECOM_NS, "Currency"),
        )
        for b in bills_element.findall(soap.qname(TELECOM_NS, "Bill"))
    )
    if any(b.amount_due < 0 for b in bills):
        raise soap.SoapDecodeError("negative AmountDue")
    return BillInquiryResult(
        billing_number=soap.child_text(element, TELECOM_NS, "SubscriberNumber"),
        customer_name=soap.child_text(element, TELECOM_NS, "CustomerName"),
        bills=bills,
    )


# --- PostPayment ------------------------------------------------------------

def encode_post_payment(order: PaymentOrder) -> ET.Element:
    element = _op("PostPayment")
    soap.sub_text(element, TELECOM_NS, "PaymentId", order.payment_id)
    soap.sub_text(element, TELECOM_NS, "SubscriberNumber", order.billing_number)
    if order.bill_number:
        soap.sub_text(element, TELECOM_NS, "BillNumber", order.bill_number)
    soap.sub_text(element, TELECOM_NS, "Amount", str(order.amount))
    soap.sub_text(element, TELECOM_NS, "Currency", order.currency)
    soap.sub_text(element, TELECOM_NS, "PaidAt", order.paid_at)
    soap.sub_text(element, TELECOM_NS, "Channel", order.channel)
    return element


def decode_post_payment(element: ET.Element, payment_id: str) -> PaymentConfirmation:
    _expect(element, "PostPaymentResponse")
    _check_payment_id(element, payment_id)
    return PaymentConfirmation(
        payment_id=payment_id,
        receipt_number=_non_empty(element, "ReceiptNumber"),
        amount=soap.child_int(element, TELECOM_NS, "AmountPosted"),
        bill_number=soap.child_text(element, TELECOM_NS, "BillNumber", required=False) or None,
    )


# --- GetPaymentStatus -------------------------------------------------------

def encode_payment_id_request(operation: str, payment_id: str) -> ET.Element:
    element = _op(operation)
    soap.sub_text(element, TELECOM_NS, "PaymentId", payment_id)
    return element


_STATUS_KINDS = {
    "POSTED": PaymentStatusKind.POSTED,
    "NOT_FOUND": PaymentStatusKind.NOT_FOUND,
    "REVERSED": PaymentStatusKind.REVERSED,
}


def decode_payment_status(element: ET.Element, payment_id: str) -> PaymentStatus:
    _expect(element, "GetPaymentStatusResponse")
    _check_payment_id(element, payment_id)
    text = soap.child_text(element, TELECOM_NS, "Status")
    kind = _STATUS_KINDS.get(text)
    if kind is None:
        raise soap.SoapDecodeError(f"unknown Status {text!r}")
    if kind is PaymentStatusKind.NOT_FOUND:
        return PaymentStatus(payment_id=payment_id, status=kind)
    return PaymentStatus(
        payment_id=payment_id,
        status=kind,
        receipt_number=_non_empty(element, "ReceiptNumber"),
        amount=soap.child_int(element, TELECOM_NS, "Amount"),
    )


# --- ReversePayment ---------------------------------------------------------

def decode_reverse_payment(element: ET.Element, payment_id: str) -> ReversalConfirmation:
    _expect(element, "ReversePaymentResponse")
    _check_payment_id(element, payment_id)
    result = soap.child_text(element, TELECOM_NS, "Result")
    if result == "REVERSED":
        return ReversalConfirmation(payment_id=payment_id, reversed=True)
    if result == "NOT_FOUND":
        return ReversalConfirmation(payment_id=payment_id, reversed=False, detail="biller has no such payment")
    raise soap.SoapDecodeError(f"unknown Result {result!r}")


def _check_payment_id(element: ET.Element, payment_id: str) -> None:
    # An answer about another payment must never confirm this one.
    answered = soap.child_text(element, TELECOM_NS, "PaymentId")
    if answered != payment_id:
        raise soap.SoapDecodeError(f"answer names PaymentId {answered!r}, asked {payment_id!r}")


def _non_empty(element: ET.Element, local: str) -> str:
    text = soap.child_text(element, TELECOM_NS, local)
    if not text:
        raise soap.SoapDecodeError(f"empty element {local}")
    return text


def fault_to_error(fault: soap.SoapFault) -> BillerError:
    """A biller fault as the interface failure the gateway acts on."""
    reason = FAULT_REASONS.get(fault.code)
    detail = f"{fault.code}: {fault.message or fault.fault_string}"
    if reason is None:
        # INTERNAL, an undocumented code, or a fault with no detail: the biller
        # did not say it refused, so the posting may exist.
        return BillerOutcomeUnknown(f"biller fault {detail}")
    return BillerDeclined(reason, detail)


def interpret_response(code: int, data: bytes, decode: Callable[[ET.Element], _T]) -> _T:
    """Map one HTTP answer (status code + body) to a result or a BillerError.

    A documented fault is believed when it comes as the spec says (HTTP 500)
    or on a 200 or a refusal status; on 408, 429, 502-504 and the like a
    proxy or an overloaded front end may be talking, so the biller's own
    outcome is unknown.  A refusal status without a SOAP body is a decline
    (the request was refused before anything was done); every other status
    without a usable body is an unknown outcome.
    """
    meaning = http.status_meaning(code)
    try:
        element = soap.parse_envelope(data)
    except soap.SoapDecodeError as exc:
        if meaning == http.REFUSED:
            raise BillerDeclined(DeclineReason.OTHER, f"HTTP {code} without a SOAP body") from exc
        raise BillerOutcomeUnknown(f"HTTP {code} with an unusable body: {exc}") from exc
    fault = soap.parse_fault(element, TELECOM_NS)
    if fault is not None:
        if code != 500 and meaning == http.UNKNOWN:
            raise BillerOutcomeUnknown(f"HTTP {code} with fault {fault.code or fault.fault_code}")
        raise fault_to_error(fault)
    if code != 200:
        raise BillerOutcomeUnknown(f"HTTP {code} without a fault")
    try:
        return decode(element)
    except soap.SoapDecodeError as exc:
        raise BillerOutcomeUnknown(f"unusable answer: {exc}") from exc


class TelecomSoapAdapter:
    """:class:`~billgw.billing_adapters.interface.BillerAdapter` for the
    telecom's SOAP service, over the shared :class:`HttpTransport`.

    ``pool_size`` bounds the connections to the biller; ``timeout_connect``
    bounds opening one (a connect timeout means nothing was sent);
    ``timeout`` is the per-call budget (None: the caller's).  The caller may
    also cancel the returned Deferred (``addTimeout``): that aborts the
    connection, and the Deferred fails with CancelledError (TimeoutError
    under ``addTimeout``) whatever the exchange was doing.
    """

    capabilities = BillerCapabilities(
        can_reverse=True,
        can_query_status=True,
        extra={"partial_payment": True, "protocol": "soap11"},
    )

    def __init__(
        self,
        reactor,
        url: str,
        *,
        timeout_connect: float,
        pool_size: int,
        soap_action_prefix: str = DEFAULT_SOAP_ACTION_PREFIX,
        timeout: float | None = None,
        idle_timeout: float = 60.0,
        clock=None,
        log: Any = None,
        ledger_path: str | None = None,
    ):
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._url = url.encode("ascii")
        self._soap_action_prefix = soap_action_prefix
        self._ledger_path = ledger_path
        self._log = (log if log is not None else structlog.get_logger()).bind(
            biller_adapter="telecom_soap", biller_url=url
        )
        self.transport = http.HttpTransport(
            reactor, pool_size=pool_size, connect_timeout=timeout_connect, timeout=timeout,
            idle_timeout=idle_timeout, max_body=soap.MAX_ENVELOPE_BYTES, clock=self._clock, log=self._log)

    def inquire(self, query: BillQuery) -> Deferred[BillInquiryResult]:
        return self._call("GetBills", encode_get_bills(query), decode_get_bills, subscriber=query.billing_number)

    def pay(self, order: PaymentOrder) -> Deferred[PaymentConfirmation]:
        return self._call(
            "PostPayment",
            encode_post_payment(order),
            lambda e: decode_post_payment(e, order.payment_id),
            payment_id=order.payment_id,
            amount=order.amount,
        )

    def status(self, payment_id: str) -> Deferred[PaymentStatus]:
        return self._call(
            "GetPaymentStatus",
            encode_payment_id_request("GetPaymentStatus", payment_id),
            lambda e: decode_payment_status(e, payment_id),
            payment_id=payment_id,
        )

    def reverse(self, payment_id: str) -> Deferred[ReversalConfirmation]:
        return self._call(
            "ReversePayment",
            encode_payment_id_request("ReversePayment", payment_id),
            lambda e: decode_reverse_payment(e, payment_id),
            payment_id=payment_id,
        )

    def close(self) -> Deferred[None]:
        """Close the idle pooled connections (at shutdown)."""
        return self.transport.close()

    def read_ledger(self, source: str | None = None) -> list[LedgerEntry]:
        """The biller's postings for ``billgw audit`` (blocking, offline).

        The telecom's SOAP interface offers no reconciliation call: the
        ledger is read from the file its back office (our simulator) keeps,
        ``source`` or the ``ledger`` setting."""
        from billgw.billing_adapters.telecom_sim import read_ledger_file  # the simulator imports us

        return read_ledger_file(source or self._ledger_path)

    def _call(self, operation: str, body: ET.Element, decode: Callable[[ET.Element], _T], **context) -> Deferred[_T]:
        log = self._log.bind(operation=operation, **context)
        started = self._clock.seconds()
        headers = Headers(
            {
                b"Content-Type": [soap.CONTENT_TYPE],
                b"SOAPAction": [f'"{self._soap_action_prefix}{operation}"'.encode("ascii")],
            }
        )
        d = self.transport.request(b"POST", self._url, headers=headers, body=soap.build_envelope(body))
        d.addCallback(lambda answer: interpret_response(answer.code, answer.body, decode))

        def done(result):
            elapsed_ms = round((self._clock.seconds() - started) * 1000)
            if isinstance(result, Failure):
                _log_failure(log, result, elapsed_ms)
                if not result.check(BillerError, CancelledError):
                    # A bug of ours after the request may have gone out: the
                    # gateway must treat it as IN_DOUBT, not as a decline.
                    return Failure(BillerOutcomeUnknown(f"adapter error: {result.type.__name__}"))
                return result
            log.info("biller_call_done", outcome="ok", elapsed_ms=elapsed_ms)
            return result

        return d.addBoth(done)


def _log_failure(log, failure: Failure, elapsed_ms: int) -> None:
    if failure.check(BillerDeclined):
        log.info("biller_call_done", outcome="declined", reason=failure.value.reason.value,
                 detail=failure.value.detail, elapsed_ms=elapsed_ms)
    elif failure.check(BillerUnavailable):
        log.warning("biller_call_done", outcome="unavailable", detail=str(failure.value), elapsed_ms=elapsed_ms)
    elif failure.check(BillerOutcomeUnknown):
        log.warning("biller_call_done", outcome="unknown", detail=str(failure.value), elapsed_ms=elapsed_ms)
    elif failure.check(CancelledError):
        log.warning("biller_call_cancelled", elapsed_ms=elapsed_ms)
    else:
        # A bug on our side, not a biller answer: keep the traceback.
        log.error("biller_call_failed", elapsed_ms=elapsed_ms, exc_info=(failure.type, failure.value, failure.tb))
