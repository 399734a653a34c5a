"""The telecom biller's SOAP front end (twisted.web): decode the envelope,
run the operation on the back office, encode the answer or the fault.

:class:`TelecomResource` is the well-behaved biller; the misbehaving ones
(:mod:`.faults`) subclass it and change one step: :meth:`~TelecomResource.answer`
(what to reply, and when) or :meth:`~TelecomResource.deliver` (how the reply
goes out).  :func:`build_site` serves a resource at the spec's path.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from twisted.internet.defer import Deferred
from twisted.web import resource, server

from billgw.billing_adapters import soap
from billgw.billing_adapters.telecom_soap import DEFAULT_SOAP_ACTION_PREFIX, TELECOM_NS, SERVICE_PATH

from .back_office import TelecomSimulator
from .ledger import PostPaymentRequest, TelecomFault


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


def build_site(reactor, service: resource.Resource) -> server.Site:
    """A Site with the service at the spec's path; anything else is 404."""
    root = resource.Resource()
    root.putChild(SERVICE_PATH.strip("/").encode("ascii"), service)
    site = server.Site(root, reactor=reactor)
    site.noisy = False
    return site
