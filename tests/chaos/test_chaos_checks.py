"""The chaos test's checks and configuration, on made-up data (fast).

A chaos run that passes proves something only if its checks would have
failed on a wrong outcome; these tests feed them each kind of wrong outcome.
"""
from __future__ import annotations

import random

import pytest

from billgw.atm_sim.switch import SwitchPlan, SwitchReport
from billgw.billing_adapters.telecom_sim import Posting
from billgw.gateway.config import load_settings

from chaos_gateway import action_schedule
from chaos_helpers import (
    check_audit,
    check_ledger,
    check_sms,
    check_switch_settled,
    set_toml,
    unresolved,
    write_gateway_config,
)

A, B = "0790000000", "0790000001"
REF1, REF2, REF3 = "a" * 32, "b" * 32, "c" * 32


def payment(index, subscriber, amount, view, ref=None, reversal=None, advice=None):
    return {"index": index, "subscriber": subscriber, "amount": amount, "view": view, "payment_reference": ref,
            "keys": {"terminal_id": "ATM00001", "stan": f"{index:06d}", "transmission_datetime": "0601101500"},
            "role": "plain", "response_code": "00" if ref else None, "reversal": reversal, "advice": advice,
            "state": "approved", "timed_out": False, "sends_0200": 1, "late_answers": 0, "late_approvals": 0,
            "anomalies": [], "error": None}


def report(*payments) -> SwitchReport:
    return SwitchReport(plan=SwitchPlan(), payments=list(payments), started_at=0.0, duration=1.0,
                        messages_sent={}, messages_received={}, link={}, latencies=[])


def posting(ref, subscriber, amount, receipt, reversed_=False):
    return Posting(ref, subscriber, "TB-1", amount, receipt, reversed_, "2026-01-01T00:00:00Z")


def test_matching_ledger_and_switch_is_clean():
    switch = report(payment(1, A, 500, "kept", REF1), payment(2, B, 700, "reversed", REF2),
                    payment(3, B, 900, "declined"), payment(4, A, 300, "kept"))  # 4: an advice without reference
    ledger = [posting(REF1, A, 500, "TR0000000001"), posting(REF2, B, 700, "TR0000000002", True),
              posting(REF3, A, 300, "TR0000000003")]
    assert check_ledger(switch, ledger) == []


@pytest.mark.parametrize("ledger, expected", [
    ([], "the biller has no posting"),  # a kept payment lost
    ([posting(REF1, A, 500, "TR1", True)], "the biller reversed it"),
    ([posting(REF1, A, 400, "TR1")], "the biller posted 400"),
    ([posting(REF1, A, 500, "TR1"), posting(REF2, B, 700, "TR2")], "still holds posting"),  # reversal not done
    ([posting(REF1, A, 500, "TR1"), posting(REF3, B, 10, "TR3")], "no reference for"),  # posted twice / unknown
])
def test_each_wrong_ledger_is_named(ledger, expected):
    switch = report(payment(1, A, 500, "kept", REF1), payment(2, B, 700, "reversed", REF2))
    problems = check_ledger(switch, ledger)
    assert any(expected in p for p in problems), problems


def test_sums_catch_an_advice_without_reference_that_the_biller_lacks():
    switch = report(payment(1, A, 500, "kept"))
    problems = check_ledger(switch, [])
    assert any("subscriber 0790000000: the biller holds 0, the switch kept 500" in p for p in problems)
    assert any("0 live postings, the switch kept 1" in p for p in problems)


def test_unacknowledged_reversal_and_refused_advice_are_problems():
    unacked = {"acknowledged": False, "sends": 9, "response_code": None}
    refused = {"acknowledged": True, "sends": 1, "response_code": "30"}
    problems = check_switch_settled(report(payment(1, A, 5, "reversed", reversal=unacked),
                                           payment(2, A, 5, "kept", advice=refused)))
    assert len(problems) == 2 and "never acknowledged" in problems[0] and "answered 30" in problems[1]


def sms(to, text):
    return {"destination_addr": to, "text": text}


def test_sms_checks():
    ledger = [posting(REF1, A, 500, "TR0000000001"), posting(REF2, B, 700, "TR0000000002", True)]
    good = [sms("962790000000", f"Paid 0.500 JOD ... Receipt TR0000000001, ref {REF1}."),
            sms("962790000001", f"Paid 0.700 JOD ... Receipt TR0000000002, ref {REF2}."),
            sms("962790000001", f"Your payment of 0.700 JOD ... was reversed. Ref {REF2}.")]
    assert check_sms(good, ledger) == []

    twice = good + [good[0]]
    assert any("got 2 receipts" in p for p in check_sms(twice, ledger))
    no_notice = good[:2]
    assert any("no reversal notice followed" in p for p in check_sms(no_notice, ledger))
    missing = good[1:]
    assert any("got no receipt" in p for p in check_sms(missing, ledger))
    phantom = good + [sms("962790000000", f"Paid ... Receipt TR0000000099, ref {REF3}.")]
    assert any("does not hold" in p for p in check_sms(phantom, ledger))
    wrong_notice = good + [sms("962790000000", f"Your payment ... was reversed. Ref {REF1}.")]
    assert any("which the biller holds" in p for p in check_sms(wrong_notice, ledger))
    wrong_phone = [sms("962790000009", good[0]["text"])] + good[1:]
    assert any("not to subscriber" in p for p in check_sms(wrong_phone, ledger))
    assert any("neither" in p for p in check_sms(good + [sms("1", "hello")], ledger))


def test_unresolved_journal_states():
    assert unresolved(None) == {"journal": 1}
    settled = {"transactions": {"CONFIRMED": 5, "REVERSED": 1}, "biller_outbox": {"DONE": 3},
               "sms_outbox": {"SENT": 5, "CANCELLED": 1}}
    assert unresolved(settled) == {}
    busy = {"transactions": {"IN_DOUBT": 1, "CONFIRMED": 2}, "biller_outbox": {"PENDING": 2},
            "sms_outbox": {"QUEUED": 1}}
    assert unresolved(busy) == {"transactions.IN_DOUBT": 1, "biller_outbox.PENDING": 2, "sms_outbox.QUEUED": 1}


def test_set_toml_changes_one_key_in_one_section_and_keeps_comments():
    text = '[a]\nport = 1   # the port\n[b]\nport = 2\nurl = "x"  # a "quoted" comment\n'
    assert set_toml(text, "b", "port", 9) == (
        '[a]\nport = 1   # the port\n[b]\nport = 9\nurl = "x"  # a "quoted" comment\n')
    assert set_toml(text, "a", "port", 7).startswith("[a]\nport = 7   # the port\n")
    with pytest.raises(KeyError):
        set_toml(text, "c", "port", 1)
    assert set_toml(text, "c", "port", 1, required=False) == text


def test_written_configuration_is_accepted_by_the_gateway(tmp_path):
    path = tmp_path / "billgw.toml"
    write_gateway_config(path, port=18583, db_url=f"sqlite:///{tmp_path / 'j.sqlite'}", telecom_port=18081,
                         smsc_port=12775, biller_timeout=2.5)
    settings = load_settings(path)
    assert settings.listener.endpoint == "tcp:18583:interface=127.0.0.1"
    assert settings.database.url == f"sqlite:///{tmp_path / 'j.sqlite'}"
    assert settings.sms.port == 12775 and settings.sms.poll_interval == 0.3
    tel = settings.billers["TEL"]
    assert tel.timeout == 2.5 and tel.adapter_settings["url"] == "http://127.0.0.1:18081/BillingService"


def test_an_uncertain_receipt_excuses_only_its_own_payment():
    ledger = [Posting("p1", "0790000001", "B1", 100, "TR0000000001", False, "t"),
              Posting("p2", "0790000002", "B2", 100, "TR0000000002", False, "t")]
    problems = check_sms([], ledger, frozenset({"p1"}))
    assert problems == ["posting p2 is held by the biller but its subscriber got no receipt"]


def refused_advice(index, subscriber, amount=50, acknowledged=True):
    p = payment(index, subscriber, amount, "kept")
    p["role"] = "advice_outside_rules"
    p["advice"] = {"acknowledged": acknowledged, "response_code": "00", "sends": 1}
    return p


def test_an_advice_outside_the_rules_is_not_owed_to_the_biller():
    switch = report(payment(1, A, 500, "kept", REF1), refused_advice(2, A))
    assert check_ledger(switch, [posting(REF1, A, 500, "TR0000000001")]) == []
    # ... and the biller holding it is wrong: it must never be posted.
    problems = check_ledger(switch, [posting(REF1, A, 500, "TR0000000001"), posting(REF2, A, 50, "TR2")])
    assert any("no reference for" in p for p in problems), problems


def finding(category, payment_id):
    return {"category": category, "payment_id": payment_id, "message": "m."}


def test_audit_allows_exactly_one_exception_per_refused_advice():
    switch = report(payment(1, A, 500, "kept", REF1), refused_advice(2, A), refused_advice(3, B))
    keys = {"g1": ("ATM00001", "000001", "0601101500"), "g2": ("ATM00001", "000002", "0601101500"),
            "g3": ("ATM00001", "000003", "0601101500")}
    clean = {"findings": [finding("exception", "g2"), finding("exception", "g3")]}
    assert check_audit(clean, switch, keys) == []
    missing = check_audit({"findings": [finding("exception", "g2")]}, switch, keys)
    assert len(missing) == 1 and "no EXCEPTION" in missing[0]
    other = check_audit({"findings": [finding("exception", "g2"), finding("exception", "g3"),
                                      finding("exception", "g1")]}, switch, keys)
    assert other == ["audit: exception g1: m."]
    posted = check_audit({"findings": [finding("posted_outside_rules", "g2"), finding("exception", "g3")]},
                         switch, keys)
    assert any("posted_outside_rules" in p for p in posted) and any("no EXCEPTION" in p for p in posted)


@pytest.mark.parametrize("seed", range(20))
def test_the_chaos_actions_fall_inside_the_window_far_enough_apart(seed):
    schedule = action_schedule(random.Random(seed), kills=4, pauses=1, window=(20, 170), gap=32)
    points = [index for index, _ in schedule]
    assert sorted(action for _, action in schedule) == ["kill"] * 4 + ["pause"]
    assert 20 <= points[0] and points[-1] < 170
    assert all(b - a >= 32 for a, b in zip(points, points[1:]))
    with pytest.raises(AssertionError, match="do not fit"):
        action_schedule(random.Random(seed), kills=4, pauses=1, window=(20, 100), gap=32)
