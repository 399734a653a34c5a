"""The electricity host simulator: a real TCP server speaking the records of
:mod:`.records` over the framing of the shared transport, with its own
ledger (:mod:`.ledger`, an SQLite file run on a thread of its own).

A connection must sign on (``SGON``) before anything else; heartbeats are
answered; every request is answered with its sequence number, in the order
the ledger finishes them.  Each misbehaviour is one subclass changing one
thing (Jasmin's simulator family):

| class | behaviour | ledger | the gateway sees |
|---|---|---|---|
| :class:`SlowHost` | answers requests after ``delay`` s on its clock (None: never); heartbeats at once | recorded at once | no answer in time: IN_DOUBT |
| :class:`DownHost` | closes every connection at once | nothing | link down: unavailable (91, nothing sent) |
| :class:`ErrorHost` | answers every request ``REJT S999`` (host failure), nothing processed | nothing | outcome unknown |
| :class:`RecordThenDropHost` | records a payment, then drops the link unanswered | recorded | outcome unknown; status (after reconnect) resolves it |
| :class:`NoReversalHost` | refuses reversals (``REJT E107``) | kept | NOT_PERMITTED: a person refunds |
| :class:`TwiceHost` | writes every answer twice | recorded once | the first answer; the second is ignored |
| :class:`GarbleHost` | processes, then answers with a bad packed digit (``garble="packed"``) or a control byte in a text field (``"ebcdic"``) | recorded | outcome unknown |
"""
from __future__ import annotations

import argparse
import datetime as _dt
from typing import Any

import structlog
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from billgw.billing_adapters.transports.record_framing import FramingError, RecordFramer

from . import ledger as host_ledger
from .copybook import RecordError
from .records import ANSWER_TO, LAYOUTS, RecordCodec

AMOUNT_UNITS = 1000  # the host's amounts are thousandths


class HostConnection(Protocol):
    def __init__(self, host: "ElectricityHost"):
        self.host = host
        self.framer = RecordFramer(host.framing, record_length=host.codec.fixed_length, max_record=host.max_record)
        self.signed_on = False
        self.gone = False

    def connectionMade(self):
        self.host.connections.append(self)

    def connectionLost(self, reason=None):
        self.gone = True
        if self in self.host.connections:
            self.host.connections.remove(self)

    def dataReceived(self, data: bytes):
        try:
            records = self.framer.feed(data)
        except FramingError as exc:
            self.host.log.warning("electricity_sim_framing_broken", detail=str(exc))
            self.transport.abortConnection()
            return
        for payload in records:
            self.host.received(self, payload)

    def send(self, payload: bytes) -> None:
        if not self.gone:
            self.transport.write(self.framer.frame(payload))


class ElectricityHost(Factory):
    """The well-behaved host."""

    def __init__(self, db_path: str, *, reactor, clock=None, code_page: str = "cp037", framing: str = "length2",
                 record_length: int | None = None, max_record: int = 4096, user: str = "BILLGW",
                 password: str = "secret", reversal_policy: str = "allowed", extra_accounts: int = 0,
                 extra_account_base: int = host_ledger.EXTRA_ACCOUNT_BASE, log: Any = None, **_ignored):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.codec = RecordCodec(code_page, record_length if framing == "fixed" else None)
        self.framing = framing
        self.max_record = max_record
        self.credentials = (user, password)
        self.reversal_policy = reversal_policy
        self.db_path = db_path
        self.extra_accounts = extra_accounts
        self.extra_account_base = extra_account_base
        self.log = (log if log is not None else structlog.get_logger()).bind(component="electricity_sim")
        self.connections: list[HostConnection] = []
        self.requests: list[str] = []  # record types received, in order
        self._pool = ThreadPool(1, 1, name="electricity-sim-ledger")
        self._shutdown = None
        self._conn = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        self._pool.start()
        # The ledger's thread must not keep a stopping process alive.
        self._shutdown = self.reactor.addSystemEventTrigger("during", "shutdown", self._stop_pool)

        def open_ledger():
            self._conn = host_ledger.connect(self.db_path)
            host_ledger.seed(self._conn, extra_accounts=self.extra_accounts,
                             extra_account_base=self.extra_account_base)

        return self._in_thread(open_ledger)

    def close(self) -> Deferred[None]:
        for connection in list(self.connections):
            connection.transport.abortConnection()
        d = self._in_thread(lambda: self._conn.close()) if self._conn is not None else succeed(None)

        def stop(result):
            if self._shutdown is not None:
                self.reactor.removeSystemEventTrigger(self._shutdown)
            self._stop_pool()
            return result

        return d.addBoth(stop)

    def _stop_pool(self) -> None:
        self._shutdown = None
        if self._pool.started:
            self._pool.stop()

    def _in_thread(self, fn, *args, **kwargs) -> Deferred:
        return deferToThreadPool(self.reactor, self._pool, fn, *args, **kwargs)

    def payments(self) -> Deferred[list]:
        return self._in_thread(host_ledger.payments, self._conn)

    def buildProtocol(self, addr):
        protocol = HostConnection(self)
        protocol.factory = self
        return protocol

    # --- records -------------------------------------------------------------------

    def received(self, connection: HostConnection, payload: bytes) -> None:
        try:
            kind, sequence = self.codec.header(payload)
        except RecordError as exc:
            self.log.warning("electricity_sim_unreadable_record", detail=str(exc))
            connection.transport.abortConnection()
            return
        self.requests.append(kind)
        try:
            record = self.codec.decode(payload)
        except RecordError as exc:
            self.reply(connection, kind, sequence, "REJT", self._reject(kind, "E109", str(exc)))
            return
        if kind == "SGON":
            ok = (record["user"], record["password"]) == self.credentials
            connection.signed_on = connection.signed_on or ok
            self.reply(connection, kind, sequence, "SGOA",
                       {"result": "00" if ok else "91", "message": "WELCOME" if ok else "INVALID USER OR PASSWORD"})
            return
        if not connection.signed_on:
            self.reply(connection, kind, sequence, "REJT", self._reject(kind, "E109", "SIGN ON FIRST"))
            return
        if kind == "HBRQ":
            self.reply(connection, kind, sequence, "HBRA", {"sent_at": record["sent_at"]})
            return
        if kind not in ANSWER_TO:
            self.reply(connection, kind, sequence, "REJT", self._reject(kind, "E109", "NOT A REQUEST"))
            return
        self.process(connection, kind, sequence, record.values)

    def process(self, connection: HostConnection, kind: str, sequence: int, values: dict) -> None:
        """Run the request on the ledger's thread, then answer it."""
        d = self._in_thread(self._operate, kind, values, self._now())

        def answered(result):
            answer_kind, answer = result
            self.reply(connection, kind, sequence, answer_kind, answer)

        d.addCallback(answered)
        d.addErrback(lambda f: self.log.error("electricity_sim_failed", exc_info=(f.type, f.value, f.tb)))

    def _now(self) -> str:
        return _dt.datetime.fromtimestamp(self.clock.seconds(), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _operate(self, kind: str, v: dict, now: str) -> tuple[str, dict]:
        """(answer type, values); blocking, on the ledger's thread."""
        conn = self._conn
        try:
            if kind == "INQR":
                answer = host_ledger.inquire(conn, v["service"], v["account"], v["bill_number"])
                for bill in answer["bills"]:
                    bill["amount_due"] = _host(bill["amount_due"])
                    bill["min_amount"] = _host(bill["min_amount"])
                return "INQA", answer
            if kind == "PAYR":
                payment = host_ledger.pay(
                    conn, payment_id=v["payment_id"], service=v["service"], account=v["account"],
                    amount=_units(v["amount"]), currency=v["currency"], paid_at=v["paid_at"],
                    bills=[(b["bill_number"], _units(b["amount"])) for b in v["bills"]], now=now)
                return "PAYA", _payment_answer(payment)
            if kind == "STAR":
                payment = host_ledger.find(conn, v["payment_id"])
                if payment is None:
                    return "STAA", {"payment_id": v["payment_id"], "state": "N", "receipt": "", "amount": 0}
                return "STAA", {"payment_id": payment.payment_id, "state": "R" if payment.reversed else "P",
                                "receipt": payment.receipt, "amount": _host(payment.amount)}
            payment = host_ledger.reverse(conn, v["payment_id"], policy=self.reversal_policy, now=now)
            return "REVA", {"payment_id": v["payment_id"], "result": "N" if payment is None else "R",
                            "receipt": "" if payment is None else payment.receipt}
        except host_ledger.HostRefusal as refusal:
            return "REJT", self._reject(kind, refusal.code, refusal.message)

    @staticmethod
    def _reject(kind: str, code: str, message: str) -> dict:
        return {"refused": kind, "error_code": code, "message": message[:40]}

    def reply(self, connection: HostConnection, request_kind: str, sequence: int, kind: str, values: dict) -> None:
        """Encode and send one answer (the hook misbehaviours change)."""
        connection.send(self.codec.encode(kind, sequence, **values))


def _units(amount) -> int:
    return int(amount * AMOUNT_UNITS)


def _host(units: int):
    from decimal import Decimal

    return Decimal(units).scaleb(-3)


def _payment_answer(payment: host_ledger.HostPayment) -> dict:
    return {"payment_id": payment.payment_id, "receipt": payment.receipt, "amount": _host(payment.amount),
            "bills": [{"bill_number": n, "amount": _host(a)} for n, a in payment.settled]}


# --- misbehaving hosts, one misbehaviour each ---------------------------------------

class SlowHost(ElectricityHost):
    """Answers requests after ``delay`` seconds on its clock (None: never)."""

    def __init__(self, *args, delay: float | None = 60.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay

    def reply(self, connection, request_kind, sequence, kind, values):
        if request_kind in ("SGON", "HBRQ"):
            return super().reply(connection, request_kind, sequence, kind, values)
        if self.delay is None:
            return None
        deferLater(self.clock, self.delay, super().reply, connection, request_kind, sequence, kind, values)


class DownHost(ElectricityHost):
    """Closes every connection as soon as it is made."""

    def buildProtocol(self, addr):
        return None


class ErrorHost(ElectricityHost):
    """Answers every request with a host failure, processing nothing."""

    def process(self, connection, kind, sequence, values):
        self.reply(connection, kind, sequence, "REJT", self._reject(kind, "S999", "SYSTEM ERROR - TRY LATER"))


class RecordThenDropHost(ElectricityHost):
    """Records a payment, then drops the connection without answering."""

    def reply(self, connection, request_kind, sequence, kind, values):
        if request_kind == "PAYR":
            connection.transport.abortConnection()
            return
        super().reply(connection, request_kind, sequence, kind, values)


class NoReversalHost(ElectricityHost):
    """Refuses every reversal (its policy): a person refunds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "reversal_policy": "never"})


class TwiceHost(ElectricityHost):
    """Writes every answer twice."""

    def reply(self, connection, request_kind, sequence, kind, values):
        super().reply(connection, request_kind, sequence, kind, values)
        super().reply(connection, request_kind, sequence, kind, values)


# Which field of which answer a GarbleHost spoils, per kind of garbling.
_GARBLE = {("PAYA", "packed"): "amount", ("PAYA", "ebcdic"): "receipt", ("INQA", "ebcdic"): "customer"}


class GarbleHost(ElectricityHost):
    """Processes the request, then garbles one field of the answer: a nibble
    that is not a packed digit, or a control byte in EBCDIC text."""

    def __init__(self, *args, garble: str = "packed", **kwargs):
        super().__init__(*args, **kwargs)
        if garble not in ("packed", "ebcdic"):
            raise ValueError(f"garble must be 'packed' or 'ebcdic', not {garble!r}")
        self.garble = garble

    def reply(self, connection, request_kind, sequence, kind, values):
        target = _GARBLE.get((kind, self.garble))
        if target is None:
            return super().reply(connection, request_kind, sequence, kind, values)
        record = bytearray(self.codec.encode(kind, sequence, **values))
        at = LAYOUTS[kind].offsets[target]
        record[at] = 0xB3 if self.garble == "packed" else 0x05  # B: not a digit; 0x05: EBCDIC HT
        connection.send(bytes(record))


BEHAVIOURS = {
    "happy": ElectricityHost, "slow": SlowHost, "down": DownHost, "errors": ErrorHost,
    "record-then-drop": RecordThenDropHost, "no-reversals": NoReversalHost, "twice": TwiceHost,
    "garble": GarbleHost,
}


async def listen_electricity_sim(reactor, endpoint: str, *, db_path: str, host_class=ElectricityHost,
                                 **options) -> tuple[Any, ElectricityHost]:
    """Start a host (its ledger seeded) listening on ``endpoint`` (port 0 allowed)."""
    host = host_class(db_path, reactor=reactor, **options)
    await host.start()
    try:
        port = await serverFromString(reactor, endpoint).listen(host)
    except BaseException:
        await host.close()
        raise
    host.log.info("electricity_sim_listening", address=str(port.getHost()), db_path=db_path,
                  behaviour=host_class.__name__)
    return port, host


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="tcp:8084:interface=127.0.0.1")
    parser.add_argument("--db", default="var/electricity-sim.sqlite", help="the host's ledger (SQLite)")
    parser.add_argument("--code-page", default="cp037")
    parser.add_argument("--framing", choices=("length2", "length4", "fixed"), default="length2")
    parser.add_argument("--record-length", type=int, default=None, help="with --framing fixed")
    parser.add_argument("--user", default="BILLGW")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--reversal-policy", choices=("allowed", "never"), default="allowed")
    parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="happy")
    parser.add_argument("--delay", type=float, default=60.0, help="seconds, with --behaviour slow")
    parser.add_argument("--garble", choices=("packed", "ebcdic"), default="packed", help="with --behaviour garble")
    parser.add_argument("--extra-accounts", type=int, default=0,
                        help="accounts with one 10.000 bill each (partial payments from 1.000), for a load")
    parser.add_argument("--extra-account-base", type=int, default=host_ledger.EXTRA_ACCOUNT_BASE,
                        help="the first extra account's number (10 digits with leading zeros)")


def options_from_args(args) -> tuple[type, dict]:
    host_class = BEHAVIOURS[args.behaviour]
    options = {"code_page": args.code_page, "framing": args.framing, "record_length": args.record_length,
               "user": args.user, "password": args.password, "reversal_policy": args.reversal_policy,
               "extra_accounts": args.extra_accounts, "extra_account_base": args.extra_account_base}
    if host_class is SlowHost:
        options["delay"] = args.delay
    if host_class is GarbleHost:
        options["garble"] = args.garble
    return host_class, options
