"""The well-behaved SMSC simulator (Jasmin's ``HappySMSC``): a real SMPP 3.4
server on Twisted.

It binds ESMEs (checking system_id and password), accepts submit_sm, answers
enquire_link and unbind, and records every message it accepted, with the
parts of a concatenated message reassembled by their UDH reference or SAR
TLVs, so a test (or a person reading ``var/smsc-received.jsonl``) sees the
text the subscriber would see.  Delivery receipts, when asked for, are
:mod:`billgw.sms.smsc_dlr`'s; the misbehaving variants are
:mod:`billgw.sms.smsc_misbehaving`'s; :mod:`billgw.sms.smsc_sim` is the
family's front door (``listen_smsc``).

The record file is appended to off the reactor thread: by default on a
one-thread pool of the factory's own (one thread keeps the lines in order),
started and stopped with the listening port; tests inject ``run_blocking``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field

import structlog
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from billgw.sms import smpp_pdu as p
from billgw.sms.encoding import DATA_CODING_GSM7, DATA_CODING_UCS2, ESM_CLASS_UDHI, decode_gsm7
from billgw.sms.smsc_dlr import DlrSender


@dataclass
class ReceivedMessage:
    """One subscriber message as the SMSC accepted it (all parts joined)."""

    system_id: str
    source_addr: str
    destination_addr: str
    data_coding: int
    text: str
    parts: int
    message_ids: list[str]
    received_at: float


def decode_text(data_coding: int, payload: bytes) -> str:
    if data_coding == DATA_CODING_GSM7:
        return decode_gsm7(payload)
    if data_coding == DATA_CODING_UCS2:
        return payload.decode("utf-16-be", errors="replace")
    return payload.decode("latin-1")


@dataclass
class _Pending:
    """Parts of a concatenated message waiting for their siblings."""

    total: int
    payloads: dict[int, bytes] = field(default_factory=dict)
    message_ids: dict[int, str] = field(default_factory=dict)


class SmscProtocol(Protocol):
    """One ESME connection.  Thin: frames and decodes, the factory decides."""

    def __init__(self):
        self.framer = p.PduFramer()
        self.bound_as: str | None = None
        self.system_id: str | None = None
        self._sequence = 0

    def next_sequence(self) -> int:
        """Sequence numbers of the SMSC's own requests (deliver_sm)."""
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.framer.add_and_parse(data)
        except p.PduError as e:
            self.factory.log.warning("smsc.bad_frame", error=str(e))
            self.transport.loseConnection()
            return
        for frame in frames:
            if self.transport.disconnecting:
                return
            self.pdu_received(p.decode_pdu(frame))

    def send_pdu(self, command_id: int, status: int, sequence: int, body: bytes = b"") -> None:
        self.transport.write(p.encode_pdu(command_id, status, sequence, body))

    def respond(self, request: p.Pdu, status: int, body: bytes = b"") -> None:
        self.send_pdu(request.command_id | p.RESPONSE, status, request.sequence_number, body)

    def connectionMade(self):
        self.factory.connections.append(self)

    def connectionLost(self, reason):
        if self in self.factory.connections:
            self.factory.connections.remove(self)
        if self.factory.dlr is not None:
            self.factory.dlr.connection_lost(self)

    def pdu_received(self, pdu: p.Pdu) -> None:
        cid = pdu.command_id
        self.factory.pdu_seen(pdu)
        try:
            if cid in p.BINDS:
                self.factory.bind_received(self, pdu, p.decode_bind(pdu.body))
            elif cid == p.SUBMIT_SM:
                if self.bound_as not in ("transmitter", "transceiver"):
                    self.respond(pdu, p.ESME_RINVBNDSTS)
                    return
                self.factory.submit_received(self, pdu, p.decode_submit_sm(pdu.body))
            elif cid == p.ENQUIRE_LINK:
                self.respond(pdu, p.ESME_ROK)
            elif cid == p.UNBIND:
                self.respond(pdu, p.ESME_ROK)
                self.bound_as = None
                self.transport.loseConnection()
            elif cid == p.DELIVER_SM | p.RESPONSE:
                if self.factory.dlr is not None:
                    self.factory.dlr.answered(self, pdu.sequence_number)
            elif cid & p.RESPONSE:
                pass  # enquire_link_resp: nothing to do
            else:
                self.send_pdu(p.GENERIC_NACK, p.ESME_RINVCMDID, pdu.sequence_number)
        except p.PduError as e:
            self.factory.log.warning("smsc.bad_pdu", command_id=hex(cid), error=str(e))
            self.respond(pdu, e.status)


class SmscFactory(Factory):
    """The well-behaved SMSC (Jasmin's ``HappySMSC``)."""

    protocol = SmscProtocol

    def __init__(
        self,
        clock: IReactorTime,
        *,
        system_id: str,
        password: str,
        record_path: str | None = None,
        message_id_prefix: str = "smsc-",
        logger=None,
        run_blocking=None,
        dlr=None,
    ):
        """``run_blocking(fn, *args)`` runs a record append off the reactor
        thread and returns a Deferred.  Without it, a record file needs the
        factory started (``startFactory``) with ``clock`` a real reactor."""
        self.clock = clock
        self.system_id = system_id
        self.password = password
        self.record_path = record_path
        self.message_id_prefix = message_id_prefix
        self.log = logger or structlog.get_logger()
        self.messages_received: list[ReceivedMessage] = []
        self.submits_received = 0  # every submit_sm, accepted or not
        self.binds: list[tuple[str, str, int]] = []  # (system_id, mode, status)
        self._ids = itertools.count(1)
        self._pending: dict[tuple, _Pending] = {}
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self.connections: list[SmscProtocol] = []  # open ESME connections
        self.pdus_received: list[p.Pdu] = []  # every PDU, requests and responses
        self._pdu_waiters: list[tuple[int, int, defer.Deferred]] = []
        self._run_blocking = run_blocking
        # Delivery receipts (billgw.sms.smsc_dlr.DlrPolicy); None: none sent.
        self.dlr = DlrSender(self, dlr) if dlr is not None else None
        self._record_pool: ThreadPool | None = None
        self._pending_records = 0
        self._record_waiters: list[defer.Deferred] = []

    def startFactory(self):
        if self.record_path and self._run_blocking is None:
            self._record_pool = ThreadPool(minthreads=1, maxthreads=1, name="smsc-sim-record")
            self._record_pool.start()
            pool = self._record_pool
            self._run_blocking = lambda fn, *args: deferToThreadPool(self.clock, pool, fn, *args)

    def stopFactory(self):
        if self._record_pool is not None:
            # Joins the writer thread after the appends already queued (one
            # short line each): a blocking call, but at stop only.
            self._record_pool.stop()
            self._record_pool = None
            self._run_blocking = None

    def pdu_seen(self, pdu: p.Pdu) -> None:
        self.pdus_received.append(pdu)
        for waiter in list(self._pdu_waiters):
            command_id, count, d = waiter
            if self._count(command_id) >= count:
                self._pdu_waiters.remove(waiter)
                if not d.called:
                    d.callback(pdu)

    def _count(self, command_id: int) -> int:
        return sum(1 for seen in self.pdus_received if seen.command_id == command_id)

    def wait_for_pdu(self, command_id: int, count: int = 1) -> defer.Deferred:
        """Fires once ``count`` PDUs with ``command_id`` have been received
        (e.g. the ESME's enquire_link or deliver_sm_resp).  Caller adds a timeout."""
        d = defer.Deferred()
        if self._count(command_id) >= count:
            d.callback(None)
        else:
            self._pdu_waiters.append((command_id, count, d))
        return d

    # -- binds ------------------------------------------------------------
    def bind_received(self, proto: SmscProtocol, pdu: p.Pdu, req: p.BindRequest) -> None:
        mode = p.BINDS[pdu.command_id]
        if proto.bound_as is not None:
            status = p.ESME_RALYBND
        elif req.system_id != self.system_id:
            status = p.ESME_RINVSYSID
        elif req.password != self.password:
            status = p.ESME_RINVPASWD
        else:
            status = p.ESME_ROK
            proto.bound_as, proto.system_id = mode, req.system_id
        self.binds.append((req.system_id, mode, status))
        self.log.info("smsc.bind", system_id=req.system_id, mode=mode, status=p.status_name(status))
        body = p.encode_message_id_body("billgw-smsc-sim") if status == p.ESME_ROK else b""
        proto.respond(pdu, status, body)
        if status == p.ESME_ROK and self.dlr is not None:
            self.dlr.bound(proto)

    # -- submits ----------------------------------------------------------
    def submit_received(self, proto: SmscProtocol, pdu: p.Pdu, sm: p.SubmitSm) -> None:
        self.submits_received += 1
        self.respond_to_submit(proto, pdu, sm)

    def respond_to_submit(self, proto: SmscProtocol, pdu: p.Pdu, sm: p.SubmitSm) -> None:
        """Accept: assign a message id, answer, record.  Subclasses misbehave here."""
        message_id = self.next_message_id()
        if self.dlr is not None:
            self.dlr.submitted(proto, sm, message_id, answered=False)
        proto.respond(pdu, p.ESME_ROK, p.encode_message_id_body(message_id))
        self.accept(proto.system_id or "", sm, message_id)
        if self.dlr is not None:
            self.dlr.submitted(proto, sm, message_id, answered=True)

    def next_message_id(self) -> str:
        n = next(self._ids)
        if self.dlr is not None:
            return self.dlr.policy.message_id(n, self.message_id_prefix)
        return f"{self.message_id_prefix}{n:06d}"

    def accept(self, system_id: str, sm: p.SubmitSm, message_id: str) -> None:
        concat, payload = (None, sm.short_message)
        if sm.esm_class & ESM_CLASS_UDHI:
            concat, payload = p.parse_udh(sm.short_message)
        else:
            concat = p.sar_concatenation(sm)
        if concat is None or concat.total <= 1:
            self._record(system_id, sm, sm.data_coding, payload, 1, [message_id])
            return
        key = (system_id, sm.source_addr, sm.destination_addr, concat.reference, concat.total)
        pending = self._pending.setdefault(key, _Pending(concat.total))
        pending.payloads[concat.sequence] = payload
        pending.message_ids[concat.sequence] = message_id
        if len(pending.payloads) == pending.total:
            del self._pending[key]
            order = sorted(pending.payloads)
            # Join the octets before decoding: a GSM escape or a UTF-16
            # surrogate pair split by a careless sender still decodes.
            joined = b"".join(pending.payloads[i] for i in order)
            ids = [pending.message_ids[i] for i in order]
            self._record(system_id, sm, sm.data_coding, joined, pending.total, ids)

    def _record(self, system_id, sm, data_coding, payload, parts, ids) -> None:
        message = ReceivedMessage(
            system_id=system_id,
            source_addr=sm.source_addr,
            destination_addr=sm.destination_addr,
            data_coding=data_coding,
            text=decode_text(data_coding, payload),
            parts=parts,
            message_ids=ids,
            received_at=self.clock.seconds(),
        )
        self.messages_received.append(message)
        self.log.info("smsc.message", destination=sm.destination_addr, parts=parts, message_ids=ids)
        if self.record_path:
            self._write_record(json.dumps(dataclasses.asdict(message), ensure_ascii=False) + "\n")
        self._fire_waiters()

    def _write_record(self, line: str) -> None:
        if self._run_blocking is None:
            self.log.error("smsc.record_not_started", record_path=self.record_path)
            return
        self._pending_records += 1
        d = self._run_blocking(_append_line, self.record_path, line)
        d.addErrback(lambda f: self.log.error("smsc.record_failed", exc_info=(f.type, f.value, f.tb)))
        d.addBoth(self._record_written)

    def _record_written(self, _) -> None:
        self._pending_records -= 1
        if self._pending_records == 0:
            waiters, self._record_waiters = self._record_waiters, []
            for d in waiters:
                d.callback(None)

    def wait_for_records(self) -> defer.Deferred:
        """Fires once every message accepted so far is in the record file.
        The caller applies a timeout."""
        if self._pending_records == 0:
            return defer.succeed(None)
        d = defer.Deferred()
        self._record_waiters.append(d)
        return d

    # -- waiting ----------------------------------------------------------
    def wait_for_messages(self, count: int) -> defer.Deferred:
        """Fires with the first ``count`` messages once they have arrived.
        The caller applies a timeout (``d.addTimeout(t, clock)``)."""
        d = defer.Deferred()
        self._waiters.append((count, d))
        self._fire_waiters()
        return d

    def _fire_waiters(self) -> None:
        ready = [(n, d) for n, d in self._waiters if len(self.messages_received) >= n]
        for n, d in ready:
            self._waiters.remove((n, d))
            if not d.called:
                d.callback(list(self.messages_received[:n]))


def _append_line(path: str, line: str) -> None:
    """Runs off the reactor thread."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


HappySMSC = SmscFactory
