"""SmppLink against the SMSC simulator over real loopback sockets."""
import pytest
import pytest_twisted

from billgw.sms import smpp_pdu as p
from billgw.sms.encoding import split_message
from billgw.sms.smpp_link import LinkState, SmppLinkDown, SmppSubmitError, SmppUncertain
from billgw.sms.smsc_sim import DropOnSubmitSMSC, ErrorOnSubmitSMSC, NoResponseOnSubmitSMSC
from billgw.sms.templates import ReceiptData, render_receipt

# A deployment's long Arabic receipt (every detail spelt out): several UCS-2 parts.
LONG_TEMPLATES = {
    "en": "Paid {amount} {currency_code} to {biller_name}. Ref {reference}.",
    "ar": (
        "تم دفع {amount} {currency_code} إلى {biller_name}، رقم الاشتراك {billing_number}، "
        "الفاتورة {bill_number}. العمولة {fee} {currency_code}. {date}، البطاقة {card}. "
        "رقم الإيصال {receipt_number}، المرجع {reference}."
    ),
}

SYSTEM_ID = "billgw"  # as configured by the smsc_factory/make_link fixtures
TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(30)


def bounded(d, reactor, timeout=TIMEOUT):
    return d.addTimeout(timeout, reactor)


@pytest_twisted.inlineCallbacks
def test_english_text_arrives_as_gsm7_with_exact_text(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    text = "Paid 12.500 JOD to Orange, ref PAY-1. Card ****0010 @ 14:05 [ok] €"
    result = yield bounded(link.submit("962791234567", text), reactor)
    [m] = yield bounded(smsc.wait_for_messages(1), reactor)
    assert (m.text, m.data_coding, m.parts) == (text, 0, 1)
    assert (m.system_id, m.source_addr, m.destination_addr) == (SYSTEM_ID, "BillGW", "962791234567")
    assert result.message_ids == m.message_ids == ["smsc-000001"]
    assert (result.parts, result.data_coding) == (1, 0)
    assert smsc.binds == [(SYSTEM_ID, "transceiver", 0)]


@pytest_twisted.inlineCallbacks
def test_long_arabic_receipt_arrives_as_ucs2_parts_reassembled(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port, bind_mode="transmitter")
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    import datetime as dt

    receipt = ReceiptData(
        "Water Authority of Jordan", "سلطة المياه", "01-234-567", "2024/02", 37125, "400", 3, "JOD",
        500, dt.datetime(2024, 2, 3, 9, 30), "WAJ-99812", "PAY-000777", "476173******0010",
    )
    text = render_receipt("ar", receipt, LONG_TEMPLATES)
    expected_parts = len(split_message(text).parts)
    assert expected_parts >= 2
    result = yield bounded(link.submit("962791234567", text), reactor)
    [m] = yield bounded(smsc.wait_for_messages(1), reactor)
    assert (m.text, m.data_coding, m.parts) == (text, 8, expected_parts)
    assert result.message_ids == m.message_ids and len(set(m.message_ids)) == expected_parts
    assert smsc.binds == [(SYSTEM_ID, "transmitter", 0)]


@pytest.mark.allow_errors  # smpp.bind_refused is logged at error level, on purpose: the alert
@pytest_twisted.inlineCallbacks
def test_wrong_password_stops_the_bind_without_retrying_and_submit_fails(
    reactor, smsc_factory, make_link, fail_on_logged_errors
):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port, password="wrong")
    yield bounded(link.wait_for_state(LinkState.REFUSED), reactor)
    assert not link.bound
    assert link.last_bind_status == 0x0E
    assert link._reconnect_timer is None  # no reconnect storm: nothing scheduled
    assert link.health()["state"] == "REFUSED"
    with pytest.raises(SmppLinkDown) as e:
        yield link.submit("962791234567", "hello")
    assert "0x0000000E" in str(e.value) and "Invalid Password" in str(e.value)
    assert smsc.messages_received == [] and smsc.submits_received == 0
    assert smsc.binds == [(SYSTEM_ID, "transceiver", 0x0E)]
    refused = [e for e in fail_on_logged_errors if e["event"] == "smpp.bind_refused"]
    assert refused and refused[0]["status"] == 0x0E and refused[0]["log_level"] == "error"
    assert "Invalid Password" in refused[0]["error"]


@pytest_twisted.inlineCallbacks
def test_nothing_listening_keeps_retrying_and_fails_submits(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    number = port.getHost().port
    yield port.stopListening()
    link = make_link(number)
    yield bounded(link.wait_for_state(LinkState.DOWN), reactor)
    yield bounded(link.wait_for_state(LinkState.CONNECTING), reactor)  # it tries again
    with pytest.raises(SmppLinkDown):
        yield link.submit("962791234567", "hello")


@pytest_twisted.inlineCallbacks
def test_link_dropped_after_the_submit_was_written_is_uncertain_then_rebinds(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory(DropOnSubmitSMSC, drops=1)
    link = make_link(port.getHost().port)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    # The SMSC read the submit_sm before it dropped: it may have taken it.
    with pytest.raises(SmppUncertain) as e:
        yield bounded(link.submit("962791234567", "first"), reactor)
    assert "written, no answer" in str(e.value) and e.value.message_ids == []
    # The link notices, rebinds after its back-off, and the next one goes through.
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    result = yield bounded(link.submit("962791234567", "second"), reactor)
    assert [m.text for m in smsc.messages_received] == ["second"]
    assert result.message_ids == smsc.messages_received[0].message_ids
    assert [b[2] for b in smsc.binds] == [0, 0]


@pytest_twisted.inlineCallbacks
def test_error_status_fails_the_submit_with_the_status(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory(ErrorOnSubmitSMSC, error_status=0x58)
    link = make_link(port.getHost().port)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    with pytest.raises(SmppSubmitError) as e:
        yield bounded(link.submit("962791234567", "hello"), reactor)
    assert e.value.status == 0x58 and "0x00000058" in str(e.value)
    assert link.bound  # a refusal is not a broken link
    assert smsc.messages_received == []


@pytest_twisted.inlineCallbacks
def test_no_response_is_uncertain_per_part_and_the_bind_stays(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory(NoResponseOnSubmitSMSC)
    link = make_link(port.getHost().port, response_timeout=0.3)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    with pytest.raises(SmppUncertain) as e:
        yield bounded(link.submit("962791234567", "hello"), reactor)
    assert "no submit_sm_resp within 0.3s" in str(e.value)
    assert link.bound and len(smsc.binds) == 1  # a silent SMSC is not a dead link: enquire_link decides


@pytest_twisted.inlineCallbacks
def test_idle_link_sends_enquire_link_and_stays_bound(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port, enquire_link_interval=0.1)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    yield bounded(smsc.wait_for_pdu(p.ENQUIRE_LINK, count=2), reactor)
    assert link.bound and len(smsc.binds) == 1


@pytest_twisted.inlineCallbacks
def test_link_answers_the_smscs_enquire_link_and_deliver_sm(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    [esme] = smsc.connections
    esme.send_pdu(p.ENQUIRE_LINK, 0, 501)
    receipt = p.SubmitSm("", 1, 1, "962791234567", 5, 0, "BillGW", 0x04, 0, 0, "", "", 0, 0, 0, 0,
                         b"id:smsc-000001 sub:001 dlvrd:001 stat:DELIVRD err:000")
    esme.send_pdu(p.DELIVER_SM, 0, 502, p.encode_submit_sm(receipt))
    yield bounded(smsc.wait_for_pdu(p.DELIVER_SM | p.RESPONSE), reactor)
    answers = [(x.command_id, x.command_status, x.sequence_number) for x in smsc.pdus_received
               if x.command_id & p.RESPONSE]
    assert answers == [(0x80000015, 0, 501), (0x80000005, 0, 502)]
    result = yield bounded(link.submit("962791234567", "still fine"), reactor)
    assert result.message_ids == ["smsc-000001"]


@pytest_twisted.inlineCallbacks
def test_unbind_from_the_smsc_is_answered_and_the_link_rebinds(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    [esme] = smsc.connections
    esme.send_pdu(p.UNBIND, 0, 77)
    yield bounded(smsc.wait_for_pdu(p.UNBIND | p.RESPONSE), reactor)
    yield bounded(link.wait_for_state(LinkState.DOWN), reactor)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    assert len(smsc.binds) == 2
    result = yield bounded(link.submit("962791234567", "after rebind"), reactor)
    assert [m.text for m in smsc.messages_received] == ["after rebind"]
    assert result.message_ids == smsc.messages_received[0].message_ids


@pytest_twisted.inlineCallbacks
def test_stop_unbinds_and_closes(reactor, smsc_factory, make_link):
    port, smsc = yield smsc_factory()
    link = make_link(port.getHost().port)
    yield bounded(link.wait_for_state(LinkState.BOUND), reactor)
    yield link.stopService()
    assert link.state is LinkState.STOPPED
    assert [x.command_id for x in smsc.pdus_received][-1] == p.UNBIND
    with pytest.raises(SmppLinkDown):
        yield link.submit("962791234567", "late")
