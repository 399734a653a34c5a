"""The SMSC simulator's protocol, on a StringTransport: the bytes it answers
and what it records."""
import json

import pytest
from smpplib import smpp
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from billgw.sms import smpp_pdu as p
from billgw.sms.encoding import split_message
from billgw.sms.smsc_sim import (
    DropOnSubmitSMSC,
    ErrorOnSubmitSMSC,
    NoResponseOnSubmitSMSC,
    SmscFactory,
)
from billgw.sms.smsc_dlr import DlrPolicy


def bind_pdu(seq=1, system_id="gw", password="secret", command=p.BIND_TRANSCEIVER):
    return p.encode_pdu(command, 0, seq, p.encode_bind(p.BindRequest(system_id, password, "", 0x34, 0, 0, "")))


def submit_pdu(seq, short_message, data_coding=0, esm_class=0, dest="962791234567"):
    sm = p.SubmitSm("", 5, 0, "BillGW", 1, 1, dest, esm_class, 0, 0, "", "", 0, 0, data_coding, 0, short_message)
    return p.encode_pdu(p.SUBMIT_SM, 0, seq, p.encode_submit_sm(sm))


def responses(transport):
    frames = p.PduFramer().add_and_parse(transport.value())
    transport.clear()
    return [p.decode_pdu(f) for f in frames]


def connect(factory_class=SmscFactory, **kwargs):
    clock = MemoryReactorClock()
    clock.advance(1_700_000_000)
    factory = factory_class(clock, system_id="gw", password="secret", **kwargs)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return factory, proto, transport


def test_bind_answers_with_the_request_sequence_and_smsc_system_id():
    factory, proto, t = connect()
    proto.dataReceived(bind_pdu(seq=77))
    assert t.value() == p.encode_pdu(0x80000009, 0, 77, b"billgw-smsc-sim\x00")
    assert proto.bound_as == "transceiver"


@pytest.mark.parametrize(
    "system_id, password, status",
    [("gw", "wrong", p.ESME_RINVPASWD), ("other", "secret", p.ESME_RINVSYSID)],
)
def test_bad_credentials_are_refused_with_their_status(system_id, password, status):
    factory, proto, t = connect()
    proto.dataReceived(bind_pdu(seq=3, system_id=system_id, password=password))
    assert t.value() == p.encode_pdu(0x80000009, status, 3)
    t.clear()
    assert proto.bound_as is None
    proto.dataReceived(submit_pdu(4, b"hi"))
    [resp] = responses(t)
    assert (resp.command_id, resp.command_status) == (0x80000004, p.ESME_RINVBNDSTS)


def test_submit_before_bind_is_refused_with_invalid_bind_status():
    factory, proto, t = connect()
    proto.dataReceived(submit_pdu(9, b"hello"))
    assert t.value() == p.encode_pdu(0x80000004, 0x04, 9)
    assert factory.messages_received == []


def test_receiver_bind_cannot_submit():
    factory, proto, t = connect()
    proto.dataReceived(bind_pdu(command=p.BIND_RECEIVER))
    responses(t)
    proto.dataReceived(submit_pdu(2, b"x"))
    assert responses(t)[0].command_status == p.ESME_RINVBNDSTS


def test_submit_is_answered_with_a_message_id_and_recorded_in_gsm7(tmp_path):
    record = tmp_path / "smsc-received.jsonl"
    # Synchronous in place of the factory's writer thread.
    factory, proto, t = connect(record_path=str(record), run_blocking=defer.maybeDeferred)
    proto.dataReceived(bind_pdu())
    responses(t)
    # Two PDUs in one segment, the second split across two reads: framing.
    data = submit_pdu(2, bytes([0x00, 0x5F]) + b"12.500 JOD") + p.encode_pdu(p.ENQUIRE_LINK, 0, 3)
    proto.dataReceived(data[:-5])
    proto.dataReceived(data[-5:])
    assert t.value() == (
        p.encode_pdu(0x80000004, 0, 2, b"smsc-000001\x00") + p.encode_pdu(0x80000015, 0, 3)
    )
    [m] = factory.messages_received
    assert (m.text, m.data_coding, m.parts, m.message_ids) == ("@§12.500 JOD", 0, 1, ["smsc-000001"])
    assert (m.system_id, m.source_addr, m.destination_addr) == ("gw", "BillGW", "962791234567")
    assert json.loads(record.read_text(encoding="utf-8"))["text"] == "@§12.500 JOD"


def test_concatenated_ucs2_parts_are_reassembled_in_sequence_order():
    text = "تم دفع فاتورتكم " * 6
    encoded = split_message(text, reference=9)
    assert len(encoded.parts) == 2
    factory, proto, t = connect()
    proto.dataReceived(bind_pdu())
    waiter = factory.wait_for_messages(1)
    # Parts may arrive in any order.
    proto.dataReceived(submit_pdu(3, encoded.parts[1], 8, 0x40))
    assert factory.messages_received == [] and not waiter.called
    proto.dataReceived(submit_pdu(2, encoded.parts[0], 8, 0x40))
    [m] = factory.messages_received
    assert (m.text, m.parts, m.data_coding) == (text, 2, 8)
    assert m.message_ids == ["smsc-000002", "smsc-000001"]
    assert waiter.result == [m]


def test_unbind_is_answered_and_closes():
    factory, proto, t = connect()
    proto.dataReceived(bind_pdu())
    responses(t)
    proto.dataReceived(p.encode_pdu(p.UNBIND, 0, 5))
    assert t.value() == p.encode_pdu(0x80000006, 0, 5)
    assert t.disconnecting


def test_unknown_command_gets_generic_nack_and_overlong_frame_closes():
    factory, proto, t = connect()
    proto.dataReceived(p.encode_pdu(0x00000103, 0, 6))  # data_sm: not supported
    assert t.value() == p.encode_pdu(p.GENERIC_NACK, p.ESME_RINVCMDID, 6)
    t.clear()
    proto.dataReceived(b"\x00\x10\x00\x00" + b"\x00" * 12)  # 1 MiB announced
    assert t.value() == b"" and t.disconnecting


def test_error_on_submit_answers_the_status_and_records_nothing():
    factory, proto, t = connect(ErrorOnSubmitSMSC, error_status=0x58)
    proto.dataReceived(bind_pdu())
    responses(t)
    proto.dataReceived(submit_pdu(2, b"hi"))
    assert t.value() == p.encode_pdu(0x80000004, 0x58, 2)
    assert factory.messages_received == [] and factory.submits_received == 1


def test_no_response_on_submit_stays_silent_but_answers_enquire_link():
    factory, proto, t = connect(NoResponseOnSubmitSMSC)
    proto.dataReceived(bind_pdu())
    responses(t)
    proto.dataReceived(submit_pdu(2, b"hi"))
    assert t.value() == b""
    proto.dataReceived(p.encode_pdu(p.ENQUIRE_LINK, 0, 3))
    assert t.value() == p.encode_pdu(0x80000015, 0, 3)


def test_drop_on_submit_closes_then_behaves_after_its_drops():
    factory, proto, t = connect(DropOnSubmitSMSC, drops=1)
    proto.dataReceived(bind_pdu())
    responses(t)
    proto.dataReceived(submit_pdu(2, b"hi"))
    assert t.value() == b"" and t.disconnecting
    factory2_proto = factory.buildProtocol(None)
    t2 = StringTransport()
    factory2_proto.makeConnection(t2)
    factory2_proto.dataReceived(bind_pdu())
    responses(t2)
    factory2_proto.dataReceived(submit_pdu(2, b"hi"))
    assert responses(t2)[0].command_status == 0
    assert [m.text for m in factory.messages_received] == ["hi"]


def test_codec_reads_smpplib_generated_submit_sm():
    """Interop: the client side is smpplib, so our decoder must read its bytes."""

    class Seq:
        sequence = 0

        def next_sequence(self):
            self.sequence += 1
            return self.sequence

    pdu = smpp.make_pdu(
        "submit_sm", client=Seq(), source_addr_ton=5, source_addr_npi=0, source_addr="BillGW",
        dest_addr_ton=1, dest_addr_npi=1, destination_addr="962791234567",
        short_message=b"\x05\x00\x03\x01\x02\x01abc", data_coding=0, esm_class=0x40,
        registered_delivery=0,
    )
    decoded = p.decode_pdu(pdu.generate())
    sm = p.decode_submit_sm(decoded.body)
    assert (decoded.command_id, decoded.sequence_number) == (p.SUBMIT_SM, 1)
    assert (sm.source_addr, sm.destination_addr, sm.esm_class) == ("BillGW", "962791234567", 0x40)
    assert sm.short_message == b"\x05\x00\x03\x01\x02\x01abc"
    assert p.parse_udh(sm.short_message) == (p.Concatenation(1, 2, 1), b"abc")


def test_truncated_submit_is_answered_with_an_error_not_a_crash():
    factory, proto, t = connect()
    proto.dataReceived(bind_pdu())
    responses(t)
    body = p.encode_submit_sm(p.SubmitSm("", 5, 0, "A", 1, 1, "9", 0, 0, 0, "", "", 0, 0, 0, 0, b"hello"))
    proto.dataReceived(p.encode_pdu(p.SUBMIT_SM, 0, 8, body[:-3]))
    assert responses(t)[0].command_status == p.ESME_RINVMSGLEN


def test_a_receipt_unanswered_when_its_connection_falls_is_sent_again_on_the_next_bind():
    """As an SMSC redelivers an unanswered deliver_sm: a receipt is kept until
    the ESME's deliver_sm_resp, so a dropped link cannot lose it."""
    def registered_submit(seq):
        sm = p.SubmitSm("", 5, 0, "BillGW", 1, 1, "962791234567", 0, 0, 0, "", "", 1, 0, 0, 0, b"hi")
        return p.encode_pdu(p.SUBMIT_SM, 0, seq, p.encode_submit_sm(sm))

    def lose(proto):
        proto.connectionLost(Failure(ConnectionLost()))

    factory, proto, t = connect(dlr=DlrPolicy())
    proto.dataReceived(bind_pdu(seq=1))
    proto.dataReceived(registered_submit(2))
    bind_resp, submit_resp, receipt = responses(t)
    assert (submit_resp.command_id, receipt.command_id) == (0x80000004, p.DELIVER_SM)
    lose(proto)  # the ESME never answered the receipt

    again = factory.buildProtocol(None)
    t2 = StringTransport()
    again.makeConnection(t2)
    again.dataReceived(bind_pdu(seq=1))
    _, resent = responses(t2)
    assert (resent.command_id, resent.body) == (p.DELIVER_SM, receipt.body)
    assert (factory.dlr.sent, factory.dlr.redelivered) == (2, 1)
    again.dataReceived(p.encode_pdu(p.DELIVER_SM | p.RESPONSE, 0, resent.sequence_number, b"\x00"))
    lose(again)  # answered: nothing is sent a third time

    third = factory.buildProtocol(None)
    t3 = StringTransport()
    third.makeConnection(t3)
    third.dataReceived(bind_pdu(seq=1))
    assert [r.command_id for r in responses(t3)] == [0x80000009]
    assert factory.dlr.redelivered == 1
