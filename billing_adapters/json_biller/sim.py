"""A JSON biller simulator: a real HTTP server implementing the interface
of docs/billers.md over :mod:`.ledger`, and its misbehaving variants.

:class:`JsonBillerResource` decodes, calls the ledger, encodes.  Each
misbehaviour is one subclass changing one thing (Jasmin's simulator family):

| class | behaviour | ledger | the gateway sees |
|---|---|---|---|
| :class:`SlowJsonBiller` | answers after ``delay`` s on its clock (None: never) | recorded after the delay | no answer in time: IN_DOUBT |
| :class:`DownJsonBiller` | drops every connection before reading a request | nothing | outcome unknown (the request left) |
| :class:`ErrorJsonBiller` | HTTP 500 with an error body, nothing processed | nothing | outcome unknown |
| :class:`RecordThenDropJsonBiller` | processes, then drops the connection unanswered | recorded | outcome unknown; status resolves it |
| :class:`TwiceJsonBiller` | writes its answer twice on the connection | recorded once | the first answer; the connection is dropped |
| :class:`GarbageJsonBiller` | processes, answers 200 with bytes that are not JSON | recorded | outcome unknown |

Refusing reversals is biller policy, not a fault:
``seed_ledger(..., reversal_policy="never")`` (CLI ``--reversal-policy never``).
"""
from __future__ import annotations

import argparse
import functools
from typing import Any, Callable

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.web import resource, server

from . import codec
from . import ledger as rules
from .ledger import BillerRefusal, JsonLedger

_DROP = -1  # (status, body) sentinel: drop the connection instead of answering


def _fire_all(waiters: list[Deferred]) -> None:
    pending = list(waiters)
    waiters.clear()
    for waiter in pending:
        waiter.callback(None)


def _required(message: dict, fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        value = message.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise BillerRefusal("INVALID_REQUEST", f"field {name} missing or not {kind.__name__}", status=400)


def _payment_view(payment) -> dict[str, Any]:
    return {"paymentId": payment.payment_id, "status": "REVERSED" if payment.reversed else "RECORDED",
            "receiptNumber": payment.receipt_number, "billNumber": payment.bill_number, "amount": payment.amount}


class JsonBillerResource(resource.Resource):
    """The interface, served under ``base_path`` (e.g. ``/api/v1``)."""

    isLeaf = True

    def __init__(self, ledger: JsonLedger, *, clock, base_path: str = "/api/v1", log=None):
        super().__init__()
        self.ledger = ledger
        self.clock = clock
        self.base = [p.encode() for p in base_path.strip("/").split("/") if p]
        self.log = (log if log is not None else structlog.get_logger()).bind(component="json_biller_sim")
        self.requests = 0
        self.abandoned = 0
        self._received: list[Deferred] = []
        self._abandoned: list[Deferred] = []

    def when_received(self) -> Deferred[None]:
        """Fires once the next request is in hand (tests act while a slow
        biller holds it, without sleeping)."""
        d: Deferred[None] = Deferred()
        self._received.append(d)
        return d

    def when_abandoned(self) -> Deferred[None]:
        """Fires the next time a client goes away before its answer."""
        d: Deferred[None] = Deferred()
        self._abandoned.append(d)
        return d

    def render(self, request: server.Request):
        self.requests += 1
        finished = {"gone": False}

        def gone(_):
            finished["gone"] = True
            self.abandoned += 1
            _fire_all(self._abandoned)

        request.notifyFinish().addErrback(gone)
        body = request.content.read()
        segments = list(request.prepath) + list(request.postpath)
        path = segments[len(self.base):] if segments[:len(self.base)] == self.base else None
        d = self.answer(request.method, path, request.args, body)

        def deliver(result):
            if not finished["gone"]:
                self.deliver(request, *result)

        d.addCallback(deliver)
        d.addErrback(lambda f: self.log.error("json_biller_sim_failed", exc_info=(f.type, f.value, f.tb)))
        # Signalled once the request is in hand (a slow biller's timer is set).
        _fire_all(self._received)
        return server.NOT_DONE_YET

    def answer(self, method: bytes, path, args, body: bytes) -> Deferred[tuple[int, bytes]]:
        """(status, body) for one request; refusals are answers too."""
        try:
            status, message = self.dispatch(method, [p.decode("utf-8", "replace") for p in path or []
                                                     if p != b""] if path is not None else None, args, body)
            return succeed((status, codec.dumps(message)))
        except BillerRefusal as refusal:
            self.log.info("json_biller_sim_refused", code=refusal.code, detail=refusal.message)
            return succeed((refusal.status, codec.error_body(refusal.code, refusal.message)))
        except Exception:
            self.log.exception("json_biller_sim_internal_error")
            return succeed((500, codec.error_body("INTERNAL", "internal error")))

    def dispatch(self, method: bytes, path: list[str] | None, args, body: bytes) -> tuple[int, dict]:
        now = self.clock.seconds()
        if path is None:
            raise BillerRefusal("INVALID_REQUEST", "unknown path", status=404)
        if method == b"POST" and path == ["bills", "inquiry"]:
            request = self._json(body)
            _required(request, {"service": str, "billingNumber": str})
            account, bills = rules.inquire(self.ledger, request["service"], request["billingNumber"],
                                           request.get("billNumber"), now)
            today = rules._today(now)
            return 200, {"billingNumber": account.billing_number, "customerName": account.customer_name,
                         "bills": [self._bill(b, today) for b in bills]}
        if method == b"POST" and path == ["payments"]:
            request = self._json(body)
            _required(request, {"paymentId": str, "service": str, "billingNumber": str, "amount": int,
                                "currency": str, "paidAt": str})
            payment = rules.pay(self.ledger, request, now)
            self.log.info("json_biller_sim_recorded", payment_id=payment.payment_id, amount=payment.amount)
            return 200, _payment_view(payment)
        if method == b"GET" and path == ["payments"]:
            after = int((args.get(b"after") or [b"0"])[0] or 0)
            limit = min(max(int((args.get(b"limit") or [b"500"])[0]), 1), 1000)
            page, cursor = rules.listing(self.ledger, after, limit)
            return 200, {"payments": [{**_payment_view(p), "billingNumber": p.billing_number,
                                       "recordedAt": p.recorded_at} for p in page],
                         "next": None if cursor is None else str(cursor)}
        if method == b"GET" and len(path) == 2 and path[0] == "payments":
            payment = rules.status(self.ledger, path[1])
            if payment is None:
                return 200, {"paymentId": path[1], "status": "NOT_FOUND"}
            return 200, _payment_view(payment)
        if method == b"POST" and len(path) == 3 and path[0] == "payments" and path[2] == "reversal":
            payment = rules.reverse(self.ledger, path[1])
            return 200, {"paymentId": path[1], "status": "NOT_FOUND" if payment is None else "REVERSED"}
        raise BillerRefusal("INVALID_REQUEST", f"no operation {method.decode()} /{'/'.join(path)}", status=404)

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            return codec.loads(body)
        except codec.JsonDecodeError as exc:
            raise BillerRefusal("INVALID_REQUEST", str(exc), status=400) from exc

    @staticmethod
    def _bill(bill, today: str) -> dict:
        out = {"billNumber": bill.bill_number, "status": bill.status(today).value, "dueAmount": bill.outstanding,
               "currency": bill.currency, "issueDate": codec.wire_date(bill.issue_date),
               "dueDate": codec.wire_date(bill.due_date), "allowPartial": bill.allow_partial}
        if bill.expiry_date:
            out["expiryDate"] = codec.wire_date(bill.expiry_date)
        if bill.min_amount is not None:
            out["minAmount"] = bill.min_amount
        return out

    def deliver(self, request: server.Request, status: int, body: bytes) -> None:
        if status == _DROP:
            request.channel.transport.abortConnection()
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", codec.CONTENT_TYPE)
        request.write(body)
        request.finish()


class SlowJsonBiller(JsonBillerResource):
    """Waits ``delay`` seconds on its clock before it starts on a request
    (None: never answers).  A request whose client has gone is still
    processed: a real biller does not know the gateway gave up."""

    def __init__(self, ledger, *, delay: float | None = None, **kwargs):
        super().__init__(ledger, **kwargs)
        self.delay = delay

    def answer(self, method, path, args, body):
        if self.delay is None:
            return Deferred()
        return deferLater(self.clock, self.delay, lambda: None).addCallback(
            lambda _: super(SlowJsonBiller, self).answer(method, path, args, body))


class DownJsonBiller(JsonBillerResource):
    """The front end takes the connection, the service behind it is dead:
    every connection is dropped, nothing is processed."""

    def answer(self, method, path, args, body):
        return succeed((_DROP, b""))


class ErrorJsonBiller(JsonBillerResource):
    """Answers HTTP 500 with an error body; nothing is processed."""

    def answer(self, method, path, args, body):
        return succeed((500, codec.error_body("INTERNAL", "the billing engine is failing")))


class RecordThenDropJsonBiller(JsonBillerResource):
    """Processes the request (a payment is recorded), then drops the
    connection without answering: the in-doubt case."""

    def answer(self, method, path, args, body):
        return super().answer(method, path, args, body).addCallback(lambda _result: (_DROP, b""))


class TwiceJsonBiller(JsonBillerResource):
    """Writes its (correct) answer, then the same answer again on the
    connection, as a buggy front end that retries its own write does."""

    def deliver(self, request, status, body):
        transport = request.channel.transport  # gone from the request once it is finished
        super().deliver(request, status, body)
        raw = (f"HTTP/1.1 {status} OK\r\nContent-Type: {codec.CONTENT_TYPE.decode()}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        transport.write(raw)


class GarbageJsonBiller(JsonBillerResource):
    """Processes the request, then answers 200 with bytes that are not JSON."""

    def deliver(self, request, status, body):
        super().deliver(request, 200, b"{\"paymentId\": <<<\x00 not json")


BEHAVIOURS: dict[str, Callable[..., JsonBillerResource]] = {
    "normal": JsonBillerResource,
    "slow": SlowJsonBiller,
    "down": DownJsonBiller,
    "errors": ErrorJsonBiller,
    "record-then-drop": RecordThenDropJsonBiller,
    "twice": TwiceJsonBiller,
    "garbage": GarbageJsonBiller,
}


def build_site(reactor, service: resource.Resource) -> server.Site:
    site = server.Site(service, reactor=reactor)
    site.noisy = False
    return site


def listen_json_biller(reactor, endpoint_description: str, *, ledger: JsonLedger, base_path: str = "/api/v1",
                       resource_class: Callable[..., JsonBillerResource] = JsonBillerResource, clock=None,
                       log=None) -> Deferred[tuple[Any, JsonBillerResource]]:
    """Serve ``ledger`` on ``endpoint_description`` (``tcp:0:interface=127.0.0.1``);
    fires with ``(listening_port, resource)``.  For a variant with options
    pass a factory: ``functools.partial(SlowJsonBiller, delay=None)``."""
    service = resource_class(ledger, clock=clock if clock is not None else reactor, base_path=base_path, log=log)
    d = serverFromString(reactor, endpoint_description).listen(build_site(reactor, service))
    return d.addCallback(lambda port: (port, service))


# --- the command line (billgw json-biller-sim) -----------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="tcp:8082:interface=127.0.0.1")
    parser.add_argument("--base-path", default="/api/v1", help="where the interface is served")
    parser.add_argument("--service", action="append", default=None,
                        help="the biller's service name(s) (repeatable; default WATER)")
    parser.add_argument("--bill-prefix", default="JB", help="prefix of the simulated bill numbers")
    parser.add_argument("--receipt-prefix", default="JR")
    parser.add_argument("--currency", default="400")
    parser.add_argument("--accounts", type=int, default=0,
                        help="load-test accounts 2000000000+i, each with one 1,000,000.000 bill")
    parser.add_argument("--reversal-policy", choices=("allowed", "never"), default="allowed")
    parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="normal",
                        help="one misbehaviour (docs/billers.md)")
    parser.add_argument("--slow-seconds", type=float, default=12.0, help="delay of --behaviour slow")


def ledger_from_args(args: argparse.Namespace) -> JsonLedger:
    services = args.service or ["WATER"]
    ledger = rules.seed_ledger(services[0], bill_prefix=args.bill_prefix, currency=args.currency,
                               accounts=args.accounts, reversal_policy=args.reversal_policy,
                               receipt_prefix=args.receipt_prefix)
    for service in services[1:]:
        more = rules.seed_ledger(service, bill_prefix=f"{args.bill_prefix}{service[:2]}", currency=args.currency,
                                 accounts=args.accounts)
        ledger.accounts.update(more.accounts)
    return ledger


def resource_from_args(args: argparse.Namespace):
    cls = BEHAVIOURS[args.behaviour]
    return functools.partial(cls, delay=args.slow_seconds) if cls is SlowJsonBiller else cls


def describe(port, args) -> str:
    host = port.getHost()
    return (f"JSON biller simulator ({args.behaviour}) listening on "
            f"http://{host.host}:{host.port}{args.base_path} (services {', '.join(args.service or ['WATER'])})")


__all__ = ["BEHAVIOURS", "DownJsonBiller", "ErrorJsonBiller", "GarbageJsonBiller", "JsonBillerResource",
           "RecordThenDropJsonBiller", "SlowJsonBiller", "TwiceJsonBiller", "add_arguments", "describe",
           "ledger_from_args", "listen_json_biller", "resource_from_args"]
