"""SmppLink's window on a Clock over StringTransport: the window, the per-part
timers, the pacer, throttling, a drop mid-window, poison rows, the stop --
asserted on the PDUs written and the answers each message gets.  The
session's own life (enquire_link, binds, bounded PDUs) is test_smpp_session.py."""
import pytest

from billgw.sms import smpp_pdu as p
from billgw.sms.smpp_link import (
    LinkState,
    SmppInvalidMessage,
    SmppLinkDown,
    SmppSubmitError,
    SmppUncertain,
    SubmitResult,
    relative_validity,
)

from smpp_fake_smsc import LONG_EN, MSISDN, clock, make_link, results, smsc, submits  # noqa: F401 (fixtures)


def test_window_caps_submits_in_flight_and_each_answer_frees_a_slot(make_link, smsc, clock):
    link = make_link(window=3)
    ds = [link.submit(MSISDN, f"receipt {n}") for n in range(5)]
    written = submits(smsc.read())
    assert [sm.short_message for _, sm in written] == [b"receipt 0", b"receipt 1", b"receipt 2"]
    answered_at = clock.seconds()
    smsc.answer(written[1][0])
    [(pdu3, sm3)] = submits(smsc.read())
    assert sm3.short_message == b"receipt 3"
    # sequence 1 was the bind; the part's time is the answer's, on the clock
    assert results(ds)[1] == SubmitResult(["id-3"], 1, 0, (answered_at,), "default")
    assert results(ds)[0] is None and link.health()["in_flight"] == 3


def test_pacer_spaces_submits_to_the_configured_rate(make_link, smsc, clock):
    link = make_link(rate=2.0)
    for n in range(3):
        link.submit(MSISDN, f"r{n}")
    assert len(submits(smsc.read(settle=False))) == 1
    clock.advance(0.49)
    assert submits(smsc.read(settle=False)) == []
    clock.advance(0.01)
    assert len(submits(smsc.read(settle=False))) == 1
    clock.advance(0.5)
    assert len(submits(smsc.read(settle=False))) == 1


def test_a_throttle_pauses_the_whole_bind_doubling_and_an_acceptance_resets_it(make_link, smsc, clock):
    link = make_link(window=1, throttle_pause=1.0)
    first, second, third = (link.submit(MSISDN, f"r{n}") for n in range(3))
    [(pdu, _)] = submits(smsc.read(settle=False))
    smsc.answer(pdu, 0x58)
    failure = results([first])[0]
    assert failure.check(SmppSubmitError) and failure.value.status == 0x58 and not failure.value.permanent
    clock.advance(0.99)
    assert submits(smsc.read(settle=False)) == []  # the next message waits too: the bind is paused
    clock.advance(0.01)
    [(pdu, _)] = submits(smsc.read(settle=False))
    smsc.answer(pdu, 0x58)
    clock.advance(1.99)
    assert submits(smsc.read(settle=False)) == []  # second refusal in a row: 2 s
    clock.advance(0.01)
    [(pdu, _)] = submits(smsc.read(settle=False))
    smsc.answer(pdu, 0)
    assert link.pacer.refusals == 0 and link.pacer.delay(clock.seconds()) == pytest.approx(0.001, abs=1e-6)


def test_permanent_status_from_the_table_fails_the_message_at_once_without_pausing(make_link, smsc, clock):
    link = make_link()
    d = link.submit(MSISDN, "to a bad number")
    [(pdu, _)] = submits(smsc.read())
    smsc.answer(pdu, 0x0B)
    failure = results([d])[0]
    assert failure.check(SmppSubmitError) and failure.value.permanent
    assert "0x0000000B" in str(failure.value)
    assert link.pacer.refusals == 0


def test_response_timer_covers_each_part_not_the_whole_message(make_link, smsc, clock):
    link = make_link(response_timeout=10.0)
    d = link.submit(MSISDN, LONG_EN)
    udhs = []
    for n in range(3):
        [(pdu, sm)] = submits(smsc.read())
        udhs.append(sm.short_message[:6])
        clock.advance(9)  # 27 s in all: a 10 s whole-message timeout would have cut it
        smsc.answer(pdu)
    result = results([d])[0]
    assert isinstance(result, SubmitResult) and result.parts == 3 and len(result.message_ids) == 3
    assert len({u[3] for u in udhs}) == 1 and [u[5] for u in udhs] == [1, 2, 3]  # one reference, in order


def test_a_part_without_an_answer_makes_the_message_uncertain_with_the_ids_so_far(make_link, smsc, clock):
    link = make_link(response_timeout=10.0)
    d = link.submit(MSISDN, LONG_EN)
    [(pdu, _)] = submits(smsc.read())
    smsc.answer(pdu)
    submits(smsc.read())  # part 2 written, never answered
    clock.advance(10)
    failure = results([d])[0]
    assert failure.check(SmppUncertain)
    assert failure.value.message_ids == [f"id-{pdu.sequence_number}"]
    assert "part 2/3 written, no answer" in str(failure.value)
    assert link.bound  # one silent answer is not a dead link
    assert submits(smsc.read()) == []  # and part 3 is not sent


def test_a_refused_later_part_is_retried_in_place_under_the_same_reference(make_link, smsc, clock):
    link = make_link(throttle_pause=1.0)
    d = link.submit(MSISDN, LONG_EN)
    [(pdu1, sm1)] = submits(smsc.read())
    smsc.answer(pdu1)
    [(pdu2, sm2)] = submits(smsc.read())
    smsc.answer(pdu2, 0x58)
    clock.advance(1)
    [(pdu2b, sm2b)] = submits(smsc.read())
    assert sm2b.short_message == sm2.short_message  # same UDH (reference, 3, 2) and text
    smsc.answer(pdu2b)
    [(pdu3, _)] = submits(smsc.read())
    smsc.answer(pdu3)
    assert results([d])[0].message_ids == [f"id-{x.sequence_number}" for x in (pdu1, pdu2b, pdu3)]


def test_a_later_part_refused_permanently_is_uncertain_never_resent_from_part_one(make_link, smsc):
    link = make_link()
    d = link.submit(MSISDN, LONG_EN)
    [(pdu1, _)] = submits(smsc.read())
    smsc.answer(pdu1)
    [(pdu2, _)] = submits(smsc.read())
    smsc.answer(pdu2, 0x0B)
    failure = results([d])[0]
    assert failure.check(SmppUncertain) and "1 of 3 parts accepted" in str(failure.value)
    assert submits(smsc.read()) == []


def test_link_drop_mid_window_written_are_uncertain_queued_are_handed_back(make_link, smsc, clock):
    link = make_link(window=2)
    ds = [link.submit(MSISDN, f"r{n}") for n in range(4)]
    assert len(submits(smsc.read())) == 2
    smsc.drop()
    out = results(ds)
    assert [type(o.value) for o in out] == [SmppUncertain, SmppUncertain, SmppLinkDown, SmppLinkDown]
    assert link.state is LinkState.DOWN
    clock.advance(1)  # back-off after one failure
    smsc.bind()
    assert link.state is LinkState.BOUND and link.failures == 0


def test_poison_msisdn_fails_alone_and_the_bind_goes_on(make_link, smsc):
    link = make_link()
    bad = link.submit("０７９１２３４５６７", "receipt")  # full-width digits: str.isdigit() says yes
    nonsense = link.submit("000000", "receipt")
    good = link.submit("0791234567", "receipt")  # national: normalised for country JO
    out = results([bad, nonsense])
    assert all(o.check(SmppInvalidMessage) for o in out)
    [(pdu, sm)] = submits(smsc.read())
    assert (sm.destination_addr, sm.dest_addr_ton, sm.dest_addr_npi) == ("962791234567", 1, 1)
    smsc.answer(pdu)
    assert isinstance(results([good])[0], SubmitResult) and link.bound


def test_validity_period_is_sent_in_the_relative_format(make_link, smsc):
    link = make_link(validity_period=86400.0)
    link.submit(MSISDN, "receipt")
    [(_, sm)] = submits(smsc.read())
    assert sm.validity_period == relative_validity(86400) == "000001000000000R"


def test_requests_from_the_smsc_are_answered_and_unknown_ones_nacked(make_link, smsc):
    link = make_link()
    smsc.proto.dataReceived(p.encode_pdu(p.ENQUIRE_LINK, 0, 900))
    receipt = p.SubmitSm("", 1, 1, MSISDN, 5, 0, "BILLGW", 0x04, 0, 0, "", "", 0, 0, 0, 0,
                         b"id:id-2 sub:001 dlvrd:001 stat:DELIVRD err:000")
    smsc.proto.dataReceived(p.encode_pdu(p.DELIVER_SM, 0, 901, p.encode_submit_sm(receipt)))
    smsc.proto.dataReceived(p.encode_pdu(0x00000103, 0, 902))  # data_sm... unknown to us
    smsc.proto.dataReceived(p.encode_pdu(0x0000ABCD, 0, 903))  # no such command
    answers = [(x.command_id, x.command_status, x.sequence_number) for x in smsc.read()]
    assert answers[:2] == [(0x80000015, 0, 900), (0x80000005, 0, 901)]
    assert answers[-1] == (p.GENERIC_NACK, p.ESME_RINVCMDID, 903)
    assert link.bound


def test_stop_fails_queued_messages_and_unbinds(make_link, smsc, clock):
    link = make_link(window=1)
    first, second = link.submit(MSISDN, "a"), link.submit(MSISDN, "b")
    submits(smsc.read())
    stopped = link.stopService()
    assert results([second])[0].check(SmppLinkDown)
    [unbind] = smsc.read()
    assert unbind.command_id == p.UNBIND
    smsc.answer(unbind)
    clock.advance(0)
    assert stopped.called and link.state is LinkState.STOPPED
    assert results([first])[0].check(SmppUncertain)  # written, unanswered when the session ended


def test_text_that_cannot_be_encoded_fails_alone_and_the_bind_goes_on(make_link, smsc):
    link = make_link()
    broken = link.submit(MSISDN, "receipt \udc00 with a lone surrogate")
    too_long = link.submit(MSISDN, "x" * 153 * 256)  # 256 parts: no handset joins them
    assert all(o.check(SmppInvalidMessage) for o in results([broken, too_long]))
    good = link.submit(MSISDN, "fine")
    [(pdu, _)] = submits(smsc.read())
    smsc.answer(pdu)
    assert isinstance(results([good])[0], SubmitResult) and link.bound


def _udh_reference(sm):
    return sm.short_message[3]  # 05 00 03 REF total seq


def test_the_concatenation_reference_is_per_handset_and_moves_on_across_a_restart(make_link, smsc, clock):
    first = make_link()
    first.submit(MSISDN, LONG_EN)
    first.submit(MSISDN, LONG_EN)  # the same handset: the next reference
    first.submit("306944123456", LONG_EN)  # another handset: its own counter
    sent = submits(smsc.read())
    refs = [_udh_reference(sm) for _, sm in sent]
    assert refs[1] == (refs[0] + 1) % 256 and refs[2] == refs[0]
    first.stopService()
    clock.pump([1.0] * 20)  # stopped (unanswered parts end UNCERTAIN), then restarted 20 s later
    second = make_link()  # a new process: nothing of the first counter survives
    second.submit(MSISDN, LONG_EN)
    [(_, sm)] = submits(smsc.read())
    assert _udh_reference(sm) not in refs[:2]


def test_a_sar_scheme_sends_the_tlvs_and_no_udh(make_link, smsc):
    link = make_link(concatenation="sar")
    link.submit(MSISDN, LONG_EN)
    [(pdu, sm)] = submits(smsc.read())
    assert sm.esm_class == 0 and sm.short_message == LONG_EN.encode()[:152]
    assert p.sar_concatenation(sm) == p.Concatenation(sm.tlv(p.TAG_SAR_MSG_REF_NUM)[0] << 8
                                                      | sm.tlv(p.TAG_SAR_MSG_REF_NUM)[1], 3, 1)
