"""The link's side of delivery receipts, on a Clock over StringTransport:
registered_delivery on the wire, every deliver_sm answered (matched or not,
handler or not), the handler told which SMSC, a receiver bind that takes no
submits, and a part's own fields (esm_class, TLVs) sent as the encoder made
them."""
from dataclasses import dataclass

import pytest
from smpp_fake_smsc import Smsc, clock, smsc, submits  # noqa: F401  (the far end and its fixtures, shared)

from billgw.sms import smpp_pdu as p
from billgw.sms.encoding import EncodedMessage
from billgw.sms.smpp_link import LinkState, SmppLink, SmppLinkConfig, SmppLinkDown, part_fields
from billgw.sms.smsc_dlr import DlrPolicy, receipt_body

MSISDN = "962791234567"


@pytest.fixture
def make_link(clock, smsc):
    links = []

    def make(**overrides):
        settings = dict(host="smsc.test", port=2775, system_id="billgw", password="pw", rate=1000.0,
                        reconnect_jitter=0.0, name="orange")
        settings.update(overrides)
        link = SmppLink(clock, SmppLinkConfig(**settings), connect=smsc.connect, random=lambda: 0.0)
        link.startService()
        links.append(link)
        smsc.bind()
        assert link.state is LinkState.BOUND
        return link

    yield make
    for link in links:
        if link.running:
            link.stopService()
            clock.pump([1.0] * 20)


def deliver(smsc, sequence, body):
    smsc.proto.dataReceived(p.encode_pdu(p.DELIVER_SM, 0, sequence, body))


def a_receipt(message_id="smsc-000007", stat="DELIVRD", form="tlv"):
    [(_, sm)] = [(None, p.SubmitSm("", 1, 1, "BillGW", 1, 1, MSISDN, 0, 0, 0, "", "", 1, 0, 0, 0, b"x"))]
    return receipt_body(DlrPolicy(form=form, stat_for={"": stat} if stat != "DELIVRD" else {}), sm,
                        message_id, 1_700_000_000, 1_700_000_060)


def test_every_submit_asks_for_a_delivery_receipt_by_default(make_link, smsc):
    link = make_link()
    link.submit(MSISDN, "hello").addErrback(lambda f: None)
    [(_, sm)] = submits(smsc.read())
    assert sm.registered_delivery == 1
    assert link.config.bind_mode == "transceiver"


def test_registered_delivery_can_be_turned_off(make_link, smsc):
    link = make_link(registered_delivery=0)
    link.submit(MSISDN, "hello").addErrback(lambda f: None)
    [(_, sm)] = submits(smsc.read())
    assert sm.registered_delivery == 0


def test_a_deliver_sm_is_answered_and_handed_over_with_the_smsc_name(make_link, smsc):
    link = make_link()
    got = []
    link.on_deliver = lambda pdu, name: got.append((pdu, name))
    deliver(smsc, 41, a_receipt())
    [resp] = smsc.read(settle=False)
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (p.DELIVER_SM | p.RESPONSE, 0, 41)
    [(pdu, name)] = got
    assert (name, pdu.receipted_message_id, pdu.message_state, pdu.esm_class) == (
        "orange", b"smsc-000007", 2, 0x04)


@pytest.mark.allow_errors  # smpp.deliver_handler_failed: the handler's bug is logged
def test_a_deliver_sm_is_answered_even_when_its_handler_fails(make_link, smsc):
    link = make_link()

    def broken(pdu, name):
        raise RuntimeError("bug")

    link.on_deliver = broken
    deliver(smsc, 7, a_receipt(form="text"))
    [resp] = smsc.read(settle=False)
    assert (resp.command_id, resp.sequence_number) == (p.DELIVER_SM | p.RESPONSE, 7)
    assert link.bound  # the session goes on


def test_a_receiver_bind_binds_as_receiver_and_takes_no_submits(make_link, smsc, clock):
    link = SmppLink(clock, SmppLinkConfig(host="h", port=1, system_id="billgw", password="pw",
                                          bind_mode="receiver"), connect=smsc.connect, random=lambda: 0.0)
    link.startService()
    bind = smsc.bind()
    assert bind.command_id == p.BIND_RECEIVER and link.bound and not link.transmits
    d = link.submit(MSISDN, "hello")
    assert isinstance(d.result.value, SmppLinkDown)
    d.addErrback(lambda f: None)
    link.stopService()
    clock.pump([1.0] * 20)


@dataclass(frozen=True)
class SarPart:
    """A part as an encoder may make it: its own esm_class and TLVs."""

    short_message: bytes
    esm_class: int
    optional_params: dict


def test_a_parts_own_fields_are_sent_as_they_are(make_link, smsc):
    message = EncodedMessage([SarPart(b"first half", 0x00, {"sar_msg_ref_num": 0x1234, "sar_total_segments": 2,
                                                            "sar_segment_seqnum": 1})], 0, 0x40)
    assert part_fields(message, 0)["esm_class"] == 0x00
    assert part_fields(EncodedMessage([b"raw"], 0, 0x40), 0) == {"short_message": b"raw", "esm_class": 0x40}
    link = make_link()
    import billgw.sms.smpp_link as smpp_link

    original = smpp_link.split_message
    smpp_link.split_message = lambda text, reference, **_scheme: message
    try:
        link.submit(MSISDN, "anything").addErrback(lambda f: None)
    finally:
        smpp_link.split_message = original
    [(pdu, sm)] = submits(smsc.read())
    assert (sm.esm_class, sm.short_message) == (0x00, b"first half")
    # The decoded submit_sm keeps its optional parameters (sms/smpp_pdu.py).
    assert sm.tlv(0x020C) == b"\x12\x34"  # sar_msg_ref_num
    assert (sm.tlv(0x020E), sm.tlv(0x020F)) == (b"\x02", b"\x01")
