"""The SMSC simulator's delivery receipts: deliver_sm back to the ESME.

A :class:`DlrPolicy` given to the simulator (``SmscFactory(dlr=...)``) makes
it answer every submit_sm that asked for one (``registered_delivery``) with
a receipt, in the forms real SMSCs use:

* ``form="tlv"``: receipted_message_id and message_state TLVs, plus the text;
* ``form="text"``: only the text ``id:... sub:... stat:... err:...``;
* ``early=True``: the receipt is written *before* the submit_sm_resp that
  gives the ESME the id (some SMSCs do; the ESME must keep it);
* ``ids``: how the receipt writes the id -- ``"same"``, ``"zeros"`` (upper
  case ids with leading zeros in the response, stripped and lower case in
  the receipt), ``"hex-decimal"`` (hexadecimal in the response, decimal in
  the receipt);
* ``stat_for``: the final state per destination prefix (``{"96279": "UNDELIV"}``),
  ``DELIVRD`` otherwise.

A receipt goes to a connection of the same system_id bound as receiver or
transceiver (the submitting one first); with none bound it waits, bounded,
until one binds, as SMSCs queue receipts.  A receipt is kept until its
deliver_sm_resp comes: one written to a connection that is lost first (the
bytes may never have left) is sent again on the next bind, as a real SMSC
redelivers an unanswered deliver_sm -- so the ESME may see a receipt twice,
never lose one to a dropped link.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from billgw.sms import smpp_pdu as p

ESM_CLASS_RECEIPT = 0x04
MAX_WAITING = 10000


@dataclass(frozen=True)
class DlrPolicy:
    form: str = "tlv"  # "tlv" or "text"
    early: bool = False
    delay: float = 0.0  # seconds after the submit_sm_resp (ignored when early)
    ids: str = "same"  # "same", "zeros", "hex-decimal"
    stat_for: dict = field(default_factory=dict)  # destination prefix -> stat
    error: str = "000"

    def __post_init__(self):
        if self.form not in ("tlv", "text") or self.ids not in ("same", "zeros", "hex-decimal"):
            raise ValueError(f"bad DlrPolicy form={self.form!r} ids={self.ids!r}")

    def message_id(self, n: int, prefix: str) -> str:
        """The id the submit_sm_resp gives for the ``n``-th message."""
        if self.ids == "hex-decimal":
            return f"{n:08X}"
        if self.ids == "zeros":
            return f"{prefix.upper()}{n:010d}"
        return f"{prefix}{n:06d}"

    def receipt_id(self, message_id: str) -> str:
        """The same id as the receipt writes it."""
        if self.ids == "hex-decimal":
            return str(int(message_id, 16))
        if self.ids == "zeros":
            return message_id.lower().lstrip("0")
        return message_id

    def stat(self, destination: str) -> str:
        best = None
        for prefix in self.stat_for:
            if destination.startswith(prefix) and (best is None or len(prefix) > len(best)):
                best = prefix
        return self.stat_for[best] if best is not None else "DELIVRD"


def _date(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%y%m%d%H%M")


def receipt_body(policy: DlrPolicy, sm: p.SubmitSm, message_id: str, submitted: float, done: float) -> bytes:
    stat = policy.stat(sm.destination_addr)
    rid = policy.receipt_id(message_id)
    text = (f"id:{rid} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
            f"submit date:{_date(submitted)} done date:{_date(done)} stat:{stat} err:{policy.error} text:")
    deliver = p.SubmitSm(
        service_type="", source_addr_ton=sm.dest_addr_ton, source_addr_npi=sm.dest_addr_npi,
        source_addr=sm.destination_addr, dest_addr_ton=sm.source_addr_ton, dest_addr_npi=sm.source_addr_npi,
        destination_addr=sm.source_addr, esm_class=ESM_CLASS_RECEIPT, protocol_id=0, priority_flag=0,
        schedule_delivery_time="", validity_period="", registered_delivery=0, replace_if_present_flag=0,
        data_coding=0, sm_default_msg_id=0, short_message=text.encode("ascii"),
    )
    tlvs = b""
    if policy.form == "tlv":
        tlvs = (p.encode_tlv(p.TLV_RECEIPTED_MESSAGE_ID, rid.encode("ascii") + b"\x00")
                + p.encode_tlv(p.TLV_MESSAGE_STATE, bytes([p.MESSAGE_STATES.get(stat, 7)])))
    return p.encode_deliver_sm(deliver, tlvs)


class DlrSender:
    """Writes receipts for one simulator factory (see the module docstring)."""

    def __init__(self, factory, policy: DlrPolicy):
        self.factory = factory
        self.policy = policy
        self.sent = 0
        self.redelivered = 0  # receipts sent again after their connection was lost unanswered
        self._waiting: list[tuple[str, bytes]] = []  # (system_id, body) with no receiver bound
        # Written, not yet answered: connection -> {sequence: (system_id, body)}.
        self._unanswered: dict[object, dict[int, tuple[str, bytes]]] = {}

    def wants(self, sm: p.SubmitSm) -> bool:
        return bool(sm.registered_delivery & 0x03)

    def submitted(self, proto, sm: p.SubmitSm, message_id: str, *, answered: bool) -> None:
        """Called before the submit_sm_resp (``answered=False``) and after it."""
        if not self.wants(sm) or self.policy.early == answered:
            return
        now = self.factory.clock.seconds()
        system_id = proto.system_id or ""
        if self.policy.early or self.policy.delay <= 0:
            self._send(system_id, receipt_body(self.policy, sm, message_id, now, now), proto)
        else:
            self.factory.clock.callLater(
                self.policy.delay, lambda: self._send(
                    system_id, receipt_body(self.policy, sm, message_id, now, self.factory.clock.seconds()), proto))

    def _receiver(self, system_id: str, preferred):
        candidates = [preferred] + list(self.factory.connections)
        for proto in candidates:
            if (proto is not None and proto.system_id == system_id and proto.bound_as in ("receiver", "transceiver")
                    and proto.transport is not None and not proto.transport.disconnecting):
                return proto
        return None

    def _send(self, system_id: str, body: bytes, preferred=None) -> None:
        proto = self._receiver(system_id, preferred)
        if proto is None:
            if len(self._waiting) < MAX_WAITING:
                self._waiting.append((system_id, body))
            return
        self._write(proto, system_id, body)

    def _write(self, proto, system_id: str, body: bytes) -> None:
        sequence = proto.next_sequence()
        self._unanswered.setdefault(proto, {})[sequence] = (system_id, body)
        proto.send_pdu(p.DELIVER_SM, 0, sequence, body)
        self.sent += 1

    def answered(self, proto, sequence: int) -> None:
        """The ESME's deliver_sm_resp: that receipt is delivered."""
        self._unanswered.get(proto, {}).pop(sequence, None)

    def connection_lost(self, proto) -> None:
        """Receipts written to ``proto`` and never answered wait for the next bind."""
        lost = self._unanswered.pop(proto, {})
        for _, (system_id, body) in sorted(lost.items()):
            if len(self._waiting) < MAX_WAITING:
                self._waiting.append((system_id, body))
                self.redelivered += 1

    def bound(self, proto) -> None:
        """A connection bound: hand it the receipts waiting for its system_id."""
        if proto.bound_as not in ("receiver", "transceiver"):
            return
        waiting, self._waiting = self._waiting, []
        for system_id, body in waiting:
            if system_id == proto.system_id:
                self._write(proto, system_id, body)
            else:
                self._waiting.append((system_id, body))
