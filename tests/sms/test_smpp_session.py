"""SmppLink's session on a Clock over StringTransport: dead links found by
enquire_link, refused binds, reconnect back-off, bounded PDUs from the SMSC
-- asserted on the PDUs written and the link's state."""
import struct

import pytest

from billgw.sms import smpp_pdu as p
from billgw.sms.smpp_link import LinkState, SmppLinkDown

from smpp_fake_smsc import MSISDN, clock, make_link, results, smsc  # noqa: F401 (fixtures)


def test_unanswered_enquire_link_is_a_dead_link_and_the_link_reconnects(make_link, smsc, clock):
    link = make_link(enquire_link_interval=30.0, enquire_link_timeout=5.0)
    clock.advance(30)
    [enquire] = smsc.read()
    assert enquire.command_id == p.ENQUIRE_LINK
    clock.advance(5)
    clock.advance(0)
    assert link.state is LinkState.DOWN and "dead link" in link.last_error
    clock.advance(1)
    assert len(smsc.connections) == 2
    smsc.bind()
    assert link.bound


def test_an_answered_enquire_link_keeps_the_bind(make_link, smsc, clock):
    link = make_link(enquire_link_interval=30.0, enquire_link_timeout=5.0)
    for _ in range(3):
        clock.advance(30)
        [enquire] = smsc.read()
        smsc.answer(enquire)
    clock.advance(5)
    assert link.bound and len(smsc.connections) == 1


@pytest.mark.allow_errors  # smpp.bind_refused: the alert
@pytest.mark.parametrize("status", [0x0D, 0x0E, 0x0F])
def test_bind_refused_for_credentials_stops_that_bind_without_reconnecting(make_link, smsc, clock, status,
                                                                          fail_on_logged_errors):
    link = make_link(bind=False)
    smsc.bind(status)
    clock.advance(0)
    assert link.state is LinkState.REFUSED and link.last_bind_status == status
    clock.advance(24 * 3600)
    assert len(smsc.connections) == 1  # no reconnect storm
    assert link.health()["state"] == "REFUSED"
    assert results([link.submit(MSISDN, "x")])[0].check(SmppLinkDown)
    [alert] = [e for e in fail_on_logged_errors if e["event"] == "smpp.bind_refused"]
    assert alert["status"] == status and alert["log_level"] == "error"


def test_other_bind_failures_reconnect_with_growing_back_off_reset_by_a_good_bind(make_link, smsc, clock):
    link = make_link(bind=False)
    for attempt, delay in enumerate([1.0, 2.0, 4.0], start=1):
        smsc.bind(0x08)  # system error: worth another try
        clock.advance(0)
        assert link.state is LinkState.DOWN and link.failures == attempt
        clock.advance(delay - 0.01)
        assert len(smsc.connections) == attempt
        clock.advance(0.01)
        assert len(smsc.connections) == attempt + 1
    smsc.bind()
    assert link.bound and link.failures == 0
    smsc.drop()
    clock.advance(1)  # the back-off starts over from reconnect_initial
    assert len(smsc.connections) == 5


def test_a_pdu_announcing_more_than_max_pdu_length_drops_the_link_at_once(make_link, smsc, clock):
    link = make_link(max_pdu_length=4096)
    smsc.proto.dataReceived(struct.pack(">I", 2_000_000_000) + b"\x80\x00\x00\x04")
    clock.advance(0)
    assert link.state is LinkState.DOWN and smsc.proto.framer.partial
    assert "command_length" in link.last_error


def test_a_pdu_that_stops_arriving_midway_drops_the_link_after_the_read_timeout(make_link, smsc, clock):
    link = make_link(pdu_read_timeout=10.0, enquire_link_interval=3600.0)
    frame = p.encode_pdu(p.DELIVER_SM, 0, 7, b"x" * 40)
    for n in range(9):  # a byte a second never completes the PDU in time
        smsc.proto.dataReceived(frame[n:n + 1])
        clock.advance(1)
    assert link.bound
    clock.advance(1)
    clock.advance(0)
    assert link.state is LinkState.DOWN and "middle of a PDU" in link.last_error
