"""The switch's roles that put the gateway's money races to the test: an
0420 pipelined behind its 0200, and a stand-in advice outside the service's
rules.  Run on the in-memory network (simulated time, exact order)."""
from __future__ import annotations

import pytest

from billgw.atm_sim.switch import (
    REASON_CUSTOMER_CANCEL,
    ROLE_PIPELINED_REVERSAL,
    ROLE_RULE_BREAKING_ADVICE,
    SwitchPlan,
    plan_payments,
)
from switch_fake_gateway import default_answer, network  # noqa: F401 (fixture)
from test_switch import plan as switch_plan
from test_switch import run

pytestmark = pytest.mark.timeout(30)


def plan(**overrides) -> SwitchPlan:
    """test_switch's plan, on two links (a pipelined reversal must stay on its 0200's)."""
    return switch_plan(**{"connections": 2, **overrides})


def test_a_pipelined_reversal_follows_its_0200_on_the_same_link_before_any_answer(network):
    def hold_the_0210_until_the_0420(gateway, protocol, mti, fields):
        if mti == "0200":
            return True  # answered below, once the 0420 is in
        if mti == "0420":
            [(_, _, original)] = gateway.mtis("0200")
            protocol.send(*default_answer("0200", original))  # late: the switch reversed first
        return False

    gateway = network.listen(hold_the_0210_until_the_0420)
    report = run(network, gateway, plan(pipelined_reversal_rate=1.0))
    financial = gateway.mtis("0200", "0420", "0421")
    assert [mti for _, mti, _ in financial] == ["0200", "0420"]
    (link_a, _, original), (link_b, _, rev) = financial
    assert link_a == link_b  # the same connection, one right behind the other
    assert rev["39"] == REASON_CUSTOMER_CANCEL
    assert rev["90"].startswith("0200" + original["11"] + original["7"])
    [payment] = report.payments
    assert (payment["role"], payment["view"]) == (ROLE_PIPELINED_REVERSAL, "reversed")
    assert payment["reversal"]["acknowledged"] and payment["late_answers"] == 1
    assert payment["anomalies"] == [] and report.kept_by_subscriber == {}


@pytest.mark.parametrize("without_0200", [False, True])
def test_an_advice_outside_the_rules_is_sent_for_the_rule_breaking_amount(network, without_0200):
    def decline_13(gateway, protocol, mti, fields):
        if mti == "0200":
            protocol.send(*default_answer(mti, fields, code="13"))
            return True
        return False

    gateway = network.listen(decline_13)
    the_plan = plan(rule_breaking_advice_rate=1.0, rule_breaking_amount=50,
                    advice_without_0200_rate=1.0 if without_0200 else 0.0)
    report = run(network, gateway, the_plan)
    assert len(gateway.mtis("0200")) == (0 if without_0200 else 1)
    [(_, _, advice)] = gateway.mtis("0220")
    assert advice["4"] == "000000000050"
    [payment] = report.payments
    assert payment["role"] == ROLE_RULE_BREAKING_ADVICE and payment["advice"]["acknowledged"]


def test_roles_are_drawn_by_their_rates_and_the_older_roles_keep_their_draws():
    older = SwitchPlan(count=400, subscribers=("0790000000",), advice_rate=0.1, cancel_rate=0.1, seed=5)
    newer = SwitchPlan(count=400, subscribers=("0790000000",), advice_rate=0.1, cancel_rate=0.1, seed=5,
                       pipelined_reversal_rate=0.1, rule_breaking_advice_rate=0.1)
    before, after = plan_payments(older), plan_payments(newer)
    for a, b in zip(before, after):
        if a.role != "plain":  # what the older roles drew, they still draw
            assert (b.role, b.amount) == (a.role, a.amount)
    roles = [p.role for p in after]
    assert 20 <= roles.count(ROLE_PIPELINED_REVERSAL) <= 60
    assert 20 <= roles.count(ROLE_RULE_BREAKING_ADVICE) <= 60
    assert {p.amount for p in after if p.role == ROLE_RULE_BREAKING_ADVICE} == {50}


@pytest.mark.parametrize("kwargs", [{"pipelined_reversal_rate": 1.5},
                                    {"advice_rate": 0.5, "cancel_rate": 0.3, "rule_breaking_advice_rate": 0.3},
                                    {"rule_breaking_amount": 0}])
def test_impossible_role_plans_are_refused(kwargs):
    with pytest.raises(ValueError):
        SwitchPlan(**kwargs)


def serial_gateway(seconds):
    """Answers 0200s one at a time, ``seconds`` each: a server that queues."""
    state = {"free_at": 0.0}

    def script(gateway, protocol, mti, fields):
        if mti != "0200":
            return False
        now = gateway.clock.seconds()
        state["free_at"] = max(now, state["free_at"]) + seconds
        protocol.send(*default_answer(mti, fields), delay=state["free_at"] - now)
        return True

    return script


@pytest.mark.parametrize("open_loop", [False, True])
def test_open_loop_latency_counts_the_queueing_a_closed_loop_hides(network, open_loop):
    gateway = network.listen(serial_gateway(1.0))
    report = run(network, gateway, plan(count=4, rate=10.0, concurrency=1, connections=1, answer_timeout=10.0,
                                        open_loop=open_loop))
    latencies = [p["latency"] for p in report.payments]
    if open_loop:
        # Due at 0.0, 0.1, 0.2, 0.3; answered at 1, 2, 3, 4: the queue shows.
        assert latencies == pytest.approx([1.0, 1.9, 2.8, 3.7])
        assert report.duration == pytest.approx(4.0, abs=0.2)
    else:
        # One at a time: each waits only for itself, and the load slows down.
        assert latencies == pytest.approx([1.0, 1.0, 1.0, 1.0])
