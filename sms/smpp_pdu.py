"""A small sans-IO SMPP 3.4 codec for the server side (the SMSC simulator).

smpplib's PDU classes are written for a client: they draw sequence numbers
from a client object and ignore a ``sequence=`` argument, so answering with
the request's sequence number needs poking at their internals.  The simulator
needs only a handful of PDUs, so they are decoded and encoded here: bytes in,
dataclasses out, and back.  No I/O; :class:`PduFramer` cuts a byte stream
into whole PDUs.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IIII")
MIN_LENGTH = HEADER.size
# submit_sm with 254 octets of text and a few TLVs is well under 1 KiB; a
# larger length means a broken or hostile peer.
MAX_LENGTH = 4096

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESPONSE = 0x80000000
BINDS = {BIND_RECEIVER: "receiver", BIND_TRANSMITTER: "transmitter", BIND_TRANSCEIVER: "transceiver"}

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RTHROTTLED = 0x58

STATUS_NAMES = {
    ESME_ROK: "ESME_ROK",
    ESME_RINVMSGLEN: "ESME_RINVMSGLEN",
    ESME_RINVCMDLEN: "ESME_RINVCMDLEN",
    ESME_RINVCMDID: "ESME_RINVCMDID",
    ESME_RINVBNDSTS: "ESME_RINVBNDSTS",
    ESME_RALYBND: "ESME_RALYBND",
    ESME_RSYSERR: "ESME_RSYSERR",
    ESME_RINVPASWD: "ESME_RINVPASWD",
    ESME_RINVSYSID: "ESME_RINVSYSID",
    0x14: "ESME_RMSGQFUL",
    ESME_RTHROTTLED: "ESME_RTHROTTLED",
}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


class PduError(ValueError):
    """A malformed PDU; ``status`` is the SMPP error to answer with."""

    def __init__(self, message: str, status: int = ESME_RSYSERR):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Pdu:
    command_id: int
    command_status: int
    sequence_number: int
    body: bytes = b""


@dataclass(frozen=True)
class BindRequest:
    system_id: str
    password: str
    system_type: str
    interface_version: int
    addr_ton: int
    addr_npi: int
    address_range: str


@dataclass(frozen=True)
class SubmitSm:
    service_type: str
    source_addr_ton: int
    source_addr_npi: int
    source_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    destination_addr: str
    esm_class: int
    protocol_id: int
    priority_flag: int
    schedule_delivery_time: str
    validity_period: str
    registered_delivery: int
    replace_if_present_flag: int
    data_coding: int
    sm_default_msg_id: int
    short_message: bytes
    tlvs: tuple[tuple[int, bytes], ...] = ()  # optional parameters: (tag, value), in order

    def tlv(self, tag: int) -> bytes | None:
        return next((value for t, value in self.tlvs if t == tag), None)


def encode_pdu(command_id: int, command_status: int, sequence_number: int, body: bytes = b"") -> bytes:
    return HEADER.pack(MIN_LENGTH + len(body), command_id, command_status, sequence_number) + body


def decode_pdu(frame: bytes) -> Pdu:
    if len(frame) < MIN_LENGTH:
        raise PduError(f"PDU of {len(frame)} octets is shorter than its header", ESME_RINVCMDLEN)
    length, command_id, status, sequence = HEADER.unpack_from(frame)
    if length != len(frame):
        raise PduError(f"command_length {length} but {len(frame)} octets", ESME_RINVCMDLEN)
    return Pdu(command_id, status, sequence, frame[MIN_LENGTH:])


class _Reader:
    """Reads C-octet strings and integers from a body, naming what is missing."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def cstring(self, name: str, max_length: int) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0 or end - self.pos >= max_length:
            raise PduError(f"{name}: no NUL within {max_length} octets at offset {self.pos}")
        value = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return value

    def int8(self, name: str) -> int:
        if self.pos >= len(self.data):
            raise PduError(f"{name}: body ends at offset {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def octets(self, name: str, length: int) -> bytes:
        if self.pos + length > len(self.data):
            raise PduError(f"{name}: {length} octets announced, body ends at offset {self.pos}", ESME_RINVMSGLEN)
        value = self.data[self.pos:self.pos + length]
        self.pos += length
        return value


def _cstring(value: str) -> bytes:
    return value.encode("latin-1") + b"\x00"


def decode_bind(body: bytes) -> BindRequest:
    r = _Reader(body)
    return BindRequest(
        system_id=r.cstring("system_id", 16),
        password=r.cstring("password", 9),
        system_type=r.cstring("system_type", 13),
        interface_version=r.int8("interface_version"),
        addr_ton=r.int8("addr_ton"),
        addr_npi=r.int8("addr_npi"),
        address_range=r.cstring("address_range", 41),
    )


def encode_bind(req: BindRequest) -> bytes:
    return (
        _cstring(req.system_id)
        + _cstring(req.password)
        + _cstring(req.system_type)
        + bytes([req.interface_version, req.addr_ton, req.addr_npi])
        + _cstring(req.address_range)
    )


TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F


def decode_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """Optional parameters (SMPP 3.4 §5.3): tag, length, value, to the end."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise PduError(f"truncated TLV header at offset {pos}", ESME_RINVCMDLEN)
        tag, length = struct.unpack_from(">HH", data, pos)
        value = data[pos + 4:pos + 4 + length]
        if len(value) != length:
            raise PduError(f"TLV 0x{tag:04X}: {length} octets announced, {len(value)} present", ESME_RINVCMDLEN)
        out.append((tag, value))
        pos += 4 + length
    return tuple(out)


def encode_tlvs(tlvs) -> bytes:
    return b"".join(struct.pack(">HH", tag, len(value)) + value for tag, value in tlvs)


def decode_submit_sm(body: bytes) -> SubmitSm:
    """Mandatory fields, then the optional TLVs (kept raw; the simulator
    reads the SAR ones).  ``message_payload`` is not supported: receipts fit
    in short_message."""
    r = _Reader(body)
    fields = dict(
        service_type=r.cstring("service_type", 6),
        source_addr_ton=r.int8("source_addr_ton"),
        source_addr_npi=r.int8("source_addr_npi"),
        source_addr=r.cstring("source_addr", 21),
        dest_addr_ton=r.int8("dest_addr_ton"),
        dest_addr_npi=r.int8("dest_addr_npi"),
        destination_addr=r.cstring("destination_addr", 21),
        esm_class=r.int8("esm_class"),
        protocol_id=r.int8("protocol_id"),
        priority_flag=r.int8("priority_flag"),
        schedule_delivery_time=r.cstring("schedule_delivery_time", 17),
        validity_period=r.cstring("validity_period", 17),
        registered_delivery=r.int8("registered_delivery"),
        replace_if_present_flag=r.int8("replace_if_present_flag"),
        data_coding=r.int8("data_coding"),
        sm_default_msg_id=r.int8("sm_default_msg_id"),
    )
    sm_length = r.int8("sm_length")
    short_message = r.octets("short_message", sm_length)
    return SubmitSm(**fields, short_message=short_message, tlvs=decode_tlvs(body[r.pos:]))


def encode_submit_sm(sm: SubmitSm) -> bytes:
    if len(sm.short_message) > 254:
        raise PduError("short_message longer than 254 octets", ESME_RINVMSGLEN)
    return (
        _cstring(sm.service_type)
        + bytes([sm.source_addr_ton, sm.source_addr_npi])
        + _cstring(sm.source_addr)
        + bytes([sm.dest_addr_ton, sm.dest_addr_npi])
        + _cstring(sm.destination_addr)
        + bytes([sm.esm_class, sm.protocol_id, sm.priority_flag])
        + _cstring(sm.schedule_delivery_time)
        + _cstring(sm.validity_period)
        + bytes([sm.registered_delivery, sm.replace_if_present_flag, sm.data_coding, sm.sm_default_msg_id])
        + bytes([len(sm.short_message)])
        + sm.short_message
        + encode_tlvs(sm.tlvs)
    )


def encode_message_id_body(message_id: str) -> bytes:
    """Body of submit_sm_resp / bind_*_resp: one C-octet string."""
    return _cstring(message_id)


def decode_message_id_body(body: bytes) -> str:
    return _Reader(body).cstring("message_id", 65) if body else ""


@dataclass(frozen=True)
class Concatenation:
    reference: int
    total: int
    sequence: int


def parse_udh(short_message: bytes) -> tuple[Concatenation | None, bytes]:
    """(concatenation info if any, user data without the UDH)."""
    if not short_message:
        raise PduError("UDHI set but short_message is empty", ESME_RINVMSGLEN)
    udhl = short_message[0]
    header, payload = short_message[1:1 + udhl], short_message[1 + udhl:]
    if len(header) != udhl:
        raise PduError(f"UDH length {udhl} exceeds short_message", ESME_RINVMSGLEN)
    pos, concat = 0, None
    while pos + 2 <= len(header):
        iei, length = header[pos], header[pos + 1]
        value = header[pos + 2:pos + 2 + length]
        if iei == 0x00 and length == 3:
            concat = Concatenation(value[0], value[1], value[2])
        elif iei == 0x08 and length == 4:
            concat = Concatenation(int.from_bytes(value[:2], "big"), value[2], value[3])
        pos += 2 + length
    return concat, payload


def sar_concatenation(sm: SubmitSm) -> Concatenation | None:
    """The concatenation a part announces in SAR TLVs, if all three are there."""
    ref, total, seq = (sm.tlv(t) for t in (TAG_SAR_MSG_REF_NUM, TAG_SAR_TOTAL_SEGMENTS, TAG_SAR_SEGMENT_SEQNUM))
    if ref is None or total is None or seq is None:
        return None
    if len(ref) != 2 or len(total) != 1 or len(seq) != 1:
        raise PduError("SAR TLVs of the wrong length", ESME_RINVMSGLEN)
    return Concatenation(int.from_bytes(ref, "big"), total[0], seq[0])


class PduFramer:
    """Cuts a TCP byte stream into PDUs.  command_length counts its own four
    octets, unlike Twisted's ``Int32StringReceiver`` prefix, hence our own."""

    def __init__(self, max_length: int = MAX_LENGTH):
        self.max_length = max_length
        self._buffer = b""

    @property
    def partial(self) -> bool:
        """True while the start of a PDU waits for the rest of it."""
        return bool(self._buffer)

    def add_and_parse(self, data: bytes) -> list[bytes]:
        """Whole frames now available; raises PduError on an impossible length
        (the connection must then be closed: the stream cannot be resynced)."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length < MIN_LENGTH or length > self.max_length:
                raise PduError(f"command_length {length} outside {MIN_LENGTH}..{self.max_length}", ESME_RINVCMDLEN)
            if len(self._buffer) < length:
                break
            frames.append(self._buffer[:length])
            self._buffer = self._buffer[length:]
        return frames


TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
MESSAGE_STATES = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
                  "UNKNOWN": 7, "REJECTD": 8}


def encode_tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def encode_deliver_sm(sm: SubmitSm, tlvs: bytes = b"") -> bytes:
    """deliver_sm's mandatory fields are laid out as submit_sm's (SMPP 3.4
    §4.6.1); optional TLVs follow."""
    return encode_submit_sm(sm) + tlvs
