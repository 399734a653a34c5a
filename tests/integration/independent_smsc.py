"""A minimal SMPP 3.4 server written from the SMPP v3.4 specification alone.

It shares no code with the gateway or its SMSC simulator: no smpplib, no
Twisted, no ``billgw`` import -- only the standard library.  A receipt that
this server decodes to the expected text shows that the gateway's SMPP
client and encoder speak SMPP as the specification writes it, not merely as
our own simulator (which shares the gateway's PDU code) reads it.

Scope, from the specification (sections referenced as "SMPP 3.4 §"):

- PDU header (§3.2): command_length, command_id, command_status,
  sequence_number, four big-endian unsigned 32-bit integers; the length
  counts the header.
- bind_transmitter / bind_receiver / bind_transceiver (§4.1): system_id,
  password, system_type, interface_version, addr_ton, addr_npi,
  address_range; the *_resp carries our system_id.  A wrong password is
  ESME_RINVPASWD, an unknown system_id ESME_RINVSYSID.
- submit_sm (§4.4): the mandatory parameters in order, then optional TLVs;
  ``short_message`` decoded by data_coding (§5.2.19): 0 = SMSC default
  alphabet, taken as GSM 03.38 septets unpacked one per octet; 8 = UCS-2
  big-endian.  With esm_class bit 6 set (0x40, UDHI, §5.2.12) the message
  starts with a user data header whose concatenation element (IEI 0x00 with
  an 8-bit reference, or 0x08 with a 16-bit one) lets us reassemble parts.
  The answer carries a message_id.  The message_payload TLV (0x0424) is
  accepted in place of short_message.
- enquire_link (§4.11) and unbind (§4.2) are answered; anything else gets
  generic_nack with ESME_RINVCMDID.

Everything is bounded: sockets have timeouts, the server stops within a
poll interval, and waiting for messages takes a timeout.
"""
from __future__ import annotations

import socketserver
import struct
import threading
from dataclasses import dataclass, field

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESPONSE_BIT = 0x80000000

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F

BINDS = {BIND_RECEIVER: "receiver", BIND_TRANSMITTER: "transmitter", BIND_TRANSCEIVER: "transceiver"}
HEADER = struct.Struct(">IIII")
MAX_PDU = 64 * 1024
TAG_MESSAGE_PAYLOAD = 0x0424

# GSM 03.38 default alphabet, code point = index (0x1B is the escape to the
# extension table).
GSM_DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
                 0x3E: "]", 0x40: "|", 0x65: "€"}
assert len(GSM_DEFAULT) == 128


class BadPdu(Exception):
    def __init__(self, message: str, status: int = ESME_RSYSERR):
        super().__init__(message)
        self.status = status


def decode_gsm_unpacked(data: bytes) -> str:
    out = []
    escape = False
    for octet in data:
        if octet > 0x7F:
            raise BadPdu(f"octet 0x{octet:02x} is not a GSM 7-bit code", ESME_RINVMSGLEN)
        if escape:
            out.append(GSM_EXTENSION.get(octet, " "))
            escape = False
        elif octet == 0x1B:
            escape = True
        else:
            out.append(GSM_DEFAULT[octet])
    return "".join(out)


def decode_short_message(data_coding: int, data: bytes) -> str:
    if data_coding == 0x00:
        return decode_gsm_unpacked(data)
    if data_coding == 0x08:
        if len(data) % 2:
            raise BadPdu("UCS-2 message with an odd number of octets", ESME_RINVMSGLEN)
        return data.decode("utf-16-be")
    if data_coding in (0x01, 0x03):  # IA5 / Latin-1
        return data.decode("latin-1")
    raise BadPdu(f"data_coding {data_coding} not supported")


class _Reader:
    """Reads mandatory parameters in order; every read is bounds-checked."""

    def __init__(self, body: bytes):
        self.body = body
        self.pos = 0

    def cstring(self, max_octets: int) -> str:
        end = self.body.find(b"\x00", self.pos, self.pos + max_octets)
        if end < 0:
            raise BadPdu(f"C-octet string at {self.pos} unterminated within {max_octets} octets",
                         ESME_RINVCMDLEN)
        value = self.body[self.pos:end].decode("ascii", "replace")
        self.pos = end + 1
        return value

    def u8(self) -> int:
        if self.pos >= len(self.body):
            raise BadPdu(f"PDU ends at {self.pos}", ESME_RINVCMDLEN)
        value = self.body[self.pos]
        self.pos += 1
        return value

    def octets(self, length: int) -> bytes:
        if self.pos + length > len(self.body):
            raise BadPdu("short_message longer than the PDU", ESME_RINVMSGLEN)
        value = self.body[self.pos:self.pos + length]
        self.pos += length
        return value

    def tlvs(self) -> dict[int, bytes]:
        found = {}
        while self.pos < len(self.body):  # bounded: each pass consumes at least 4 octets
            if self.pos + 4 > len(self.body):
                raise BadPdu("truncated TLV", ESME_RINVCMDLEN)
            tag, length = struct.unpack_from(">HH", self.body, self.pos)
            self.pos += 4
            found[tag] = self.octets(length)
        return found


@dataclass(frozen=True)
class Submit:
    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes


def parse_submit_sm(body: bytes) -> Submit:
    r = _Reader(body)
    r.cstring(6)  # service_type
    r.u8(), r.u8()  # source_addr_ton, source_addr_npi
    source = r.cstring(21)
    r.u8(), r.u8()  # dest_addr_ton, dest_addr_npi
    destination = r.cstring(21)
    esm_class = r.u8()
    r.u8(), r.u8()  # protocol_id, priority_flag
    r.cstring(17), r.cstring(17)  # schedule_delivery_time, validity_period
    r.u8(), r.u8()  # registered_delivery, replace_if_present_flag
    data_coding = r.u8()
    r.u8()  # sm_default_msg_id
    message = r.octets(r.u8())
    tlvs = r.tlvs()
    if not message and TAG_MESSAGE_PAYLOAD in tlvs:
        message = tlvs[TAG_MESSAGE_PAYLOAD]
    return Submit(source, destination, esm_class, data_coding, message)


def split_udh(short_message: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """((reference, total, sequence) or None, user data after the UDH)."""
    if not short_message:
        raise BadPdu("UDHI set on an empty message", ESME_RINVMSGLEN)
    udhl = short_message[0]
    header, data = short_message[1:1 + udhl], short_message[1 + udhl:]
    if len(header) != udhl:
        raise BadPdu("UDH longer than the message", ESME_RINVMSGLEN)
    concat = None
    pos = 0
    while pos + 2 <= len(header):  # bounded: pos grows by at least 2
        iei, length = header[pos], header[pos + 1]
        value = header[pos + 2:pos + 2 + length]
        if iei == 0x00 and length == 3:
            concat = (value[0], value[1], value[2])
        elif iei == 0x08 and length == 4:
            concat = ((value[0] << 8) | value[1], value[2], value[3])
        pos += 2 + length
    return concat, data


@dataclass
class Message:
    """A subscriber message, parts joined."""

    system_id: str
    source_addr: str
    destination_addr: str
    data_coding: int
    text: str
    parts: int
    message_ids: list[str]


@dataclass
class _Parts:
    total: int
    data: dict[int, bytes] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)


class IndependentSmsc:
    """``start()`` listens on 127.0.0.1, port 0; ``port`` says where.
    ``messages`` and ``commands`` (command names in arrival order) record
    what the ESME did; ``wait_for_messages`` blocks (bounded) -- call it
    from a thread, not from the reactor."""

    def __init__(self, system_id: str, password: str, poll_interval: float = 0.2):
        self.system_id = system_id
        self.password = password
        self.poll_interval = poll_interval
        self.messages: list[Message] = []
        self.commands: list[str] = []
        self.binds: list[tuple[str, str, int]] = []
        self._parts: dict[tuple, _Parts] = {}
        self._next_id = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "IndependentSmsc":
        smsc = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                smsc._serve_connection(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(self.poll_interval,),
                                        name="independent-smsc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and end every connection within a poll interval."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_for_messages(self, count: int, timeout: float) -> list[Message]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"{len(self.messages)} of {count} messages within {timeout} s")
            return list(self.messages[:count])

    # -- one connection ----------------------------------------------------
    def _serve_connection(self, sock) -> None:
        sock.settimeout(self.poll_interval)
        buffer = b""
        bound_as = None
        bound_id = ""
        while not self._stopping.is_set():
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= HEADER.size:  # bounded: each pass consumes a PDU or breaks
                length, command_id, _status, sequence = HEADER.unpack_from(buffer)
                if not HEADER.size <= length <= MAX_PDU:
                    sock.close()
                    return
                if len(buffer) < length:
                    break
                body, buffer = buffer[HEADER.size:length], buffer[length:]
                with self._changed:
                    self.commands.append(_command_name(command_id))
                reply, bound_as, bound_id, close = self._answer(command_id, sequence, body, bound_as, bound_id)
                if reply:
                    sock.sendall(reply)
                if close:
                    sock.close()
                    return

    def _answer(self, command_id, sequence, body, bound_as, bound_id):
        """(reply bytes, bound_as, bound system_id, close afterwards)."""
        if command_id in BINDS:
            try:
                r = _Reader(body)
                system_id, password = r.cstring(16), r.cstring(9)
            except BadPdu as exc:
                return _pdu(command_id | RESPONSE_BIT, exc.status, sequence), bound_as, bound_id, False
            if bound_as is not None:
                status = ESME_RALYBND
            elif system_id != self.system_id:
                status = ESME_RINVSYSID
            elif password != self.password:
                status = ESME_RINVPASWD
            else:
                status = ESME_ROK
                bound_as, bound_id = BINDS[command_id], system_id
            with self._changed:
                self.binds.append((system_id, BINDS[command_id], status))
            body_out = _cstring("independent-smsc") if status == ESME_ROK else b""
            return _pdu(command_id | RESPONSE_BIT, status, sequence, body_out), bound_as, bound_id, False
        if command_id == SUBMIT_SM:
            if bound_as not in ("transmitter", "transceiver"):
                return _pdu(SUBMIT_SM | RESPONSE_BIT, ESME_RINVBNDSTS, sequence), bound_as, bound_id, False
            try:
                message_id = self._submit(bound_id, parse_submit_sm(body))
            except BadPdu as exc:
                return _pdu(SUBMIT_SM | RESPONSE_BIT, exc.status, sequence), bound_as, bound_id, False
            return (_pdu(SUBMIT_SM | RESPONSE_BIT, ESME_ROK, sequence, _cstring(message_id)),
                    bound_as, bound_id, False)
        if command_id == ENQUIRE_LINK:
            return _pdu(ENQUIRE_LINK | RESPONSE_BIT, ESME_ROK, sequence), bound_as, bound_id, False
        if command_id == UNBIND:
            return _pdu(UNBIND | RESPONSE_BIT, ESME_ROK, sequence), None, "", True
        if command_id & RESPONSE_BIT:
            return b"", bound_as, bound_id, False
        return _pdu(GENERIC_NACK, ESME_RINVCMDID, sequence), bound_as, bound_id, False

    def _submit(self, system_id: str, sm: Submit) -> str:
        concat, data = (None, sm.short_message)
        if sm.esm_class & 0x40:
            concat, data = split_udh(sm.short_message)
        # Decode each part on its own first: a part that is not valid in its
        # data_coding is refused, as an SMSC would.
        if concat is None or concat[1] <= 1:
            decode_short_message(sm.data_coding, data)
        with self._changed:
            self._next_id += 1
            message_id = f"ind{self._next_id:08d}"
            if concat is None or concat[1] <= 1:
                self._record(system_id, sm, decode_short_message(sm.data_coding, data), 1, [message_id])
                return message_id
            reference, total, seq = concat
            key = (system_id, sm.source_addr, sm.destination_addr, reference, total)
            parts = self._parts.setdefault(key, _Parts(total))
            parts.data[seq], parts.ids[seq] = data, message_id
            if len(parts.data) == total:
                del self._parts[key]
                order = sorted(parts.data)
                if order != list(range(1, total + 1)):
                    raise BadPdu(f"part numbers {order} for {total} parts")
                text = decode_short_message(sm.data_coding, b"".join(parts.data[i] for i in order))
                self._record(system_id, sm, text, total, [parts.ids[i] for i in order])
            return message_id

    def _record(self, system_id, sm: Submit, text: str, parts: int, ids: list[str]) -> None:
        self.messages.append(Message(system_id, sm.source_addr, sm.destination_addr, sm.data_coding,
                                     text, parts, ids))
        self._changed.notify_all()


def _cstring(value: str) -> bytes:
    return value.encode("ascii") + b"\x00"


def _pdu(command_id: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER.size + len(body), command_id, status, sequence) + body


_NAMES = {BIND_RECEIVER: "bind_receiver", BIND_TRANSMITTER: "bind_transmitter",
          BIND_TRANSCEIVER: "bind_transceiver", SUBMIT_SM: "submit_sm", UNBIND: "unbind",
          ENQUIRE_LINK: "enquire_link", GENERIC_NACK: "generic_nack"}


def _command_name(command_id: int) -> str:
    if command_id in _NAMES:
        return _NAMES[command_id]
    base = _NAMES.get(command_id & ~RESPONSE_BIT)
    if base and command_id & RESPONSE_BIT:
        return base + "_resp"
    return f"0x{command_id:08x}"
