"""The bank-switch load generator against a scripted fake gateway.

The fake gateway records every message it receives (with the connection it
came on) and answers as each test's script says, so the tests assert what the
switch puts on the wire (MTIs, keys, F90) and what it concludes (its view of
every payment and the sums it reports).  Switch and gateway run on one
``MemoryReactorClock``, connected by ``twisted.test.iosim`` (the ``network``
fixture): the switch's timeouts and the gateway's delays are simulated
seconds that fire in an exact order, whatever the machine's speed.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
from twisted.internet.testing import MemoryReactorClock

from billgw.atm_sim.switch import (
    REASON_CUSTOMER_CANCEL,
    REASON_LATE,
    SwitchPlan,
    plan_payments,
    run_switch,
)
from switch_fake_gateway import PORT, default_answer, network  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"


def plan(**overrides) -> SwitchPlan:
    base = dict(count=1, subscribers=("0790000000",), duplicate_rate=0.0, advice_rate=0.0, cancel_rate=0.0,
                answer_timeout=0.4, repeat_interval=0.2, connect_wait=1.0, sign_on_timeout=1.0,
                reconnect_max_delay=0.2, max_duration=10.0, connections=1, rate=100.0, first_stan=100)
    base.update(overrides)
    return SwitchPlan(**base)


def run(network, gateway, the_plan):
    return network.run(run_switch(network.clock, HOST, gateway.port, the_plan))


# --- the plain path and the report ----------------------------------------------

def test_approvals_are_kept_and_summed_per_subscriber(network, tmp_path):
    gateway = network.listen()
    the_plan = plan(count=12, subscribers=("0790000000", "0790000001", "0790000002"), connections=2,
                    amount_min=100, amount_max=5000)
    report = run(network, gateway, the_plan)

    expected: dict[str, int] = {}
    for p in plan_payments(the_plan):
        expected[p.subscriber] = expected.get(p.subscriber, 0) + p.amount
    assert report.kept_by_subscriber == expected
    assert report.counts["approved"] == report.counts["kept"] == 12
    assert [p["view"] for p in report.payments] == ["kept"] * 12
    # The reference of each approval is the one the gateway put in F48 PR.
    for p in report.payments:
        assert p["payment_reference"] == f"PR{p['keys']['stan']}{p['keys']['transmission_datetime']}"
        assert p["latency"] is not None and p["latency"] < the_plan.answer_timeout
    # Each connection signed on before carrying a payment.
    for number in (1, 2):
        on_it = [mti for n, mti, _ in gateway.received if n == number]
        if "0200" in on_it:
            assert on_it[0] == "0800"
    sign_ons = gateway.mtis("0800")
    assert {f["70"] for _, _, f in sign_ons} == {"001"}
    # The 0200s carry what the plan says, with unique keys.
    payments = gateway.mtis("0200")
    assert len({(f["32"], f["41"], f["11"], f["7"]) for _, _, f in payments}) == 12
    assert sorted(int(f["4"]) for _, _, f in payments) == sorted(p.amount for p in plan_payments(the_plan))

    path = tmp_path / "report.json"
    report.write(path)
    written = json.loads(path.read_text("utf-8"))
    assert written["kept_by_subscriber"] == expected
    assert written["kept_total"] == sum(expected.values())
    assert written["counts"]["payments"] == 12
    assert "payments   12" in report.summary()


def test_declined_payment_is_not_kept(network):
    def decline(gateway, protocol, mti, fields):
        if mti == "0200":
            protocol.send(*default_answer(mti, fields, code="13"))
            return True
        return False

    gateway = network.listen(decline)
    report = run(network, gateway, plan(count=3))
    assert [p["view"] for p in report.payments] == ["declined"] * 3
    assert report.kept_by_subscriber == {}
    assert gateway.mtis("0420", "0421") == []  # a decline is final: nothing to reverse


# --- reversal after the switch's timeout ------------------------------------------

def test_timeout_sends_0420_then_0421_with_the_same_keys_until_0430(network):
    def silent_then_third_reversal(gateway, protocol, mti, fields):
        if mti == "0200":
            return True  # never answered
        if mti in ("0420", "0421"):
            return len(gateway.mtis("0420", "0421")) < 3  # the third one gets its 0430
        return False

    gateway = network.listen(silent_then_third_reversal)
    report = run(network, gateway, plan(acquirer_id="123456"))

    [(_, _, original)] = gateway.mtis("0200")
    reversals = gateway.mtis("0420", "0421")
    assert [mti for _, mti, _ in reversals] == ["0420", "0421", "0421"]
    first = reversals[0][2]
    for _, _, f in reversals:
        assert (f["11"], f["7"]) == (first["11"], first["7"])  # a repeat keeps its keys
    assert (first["11"], first["7"]) != (original["11"], original["7"])  # its own new keys
    assert first["90"] == "0200" + original["11"] + original["7"] + "00000123456" + "0" * 11
    assert {k: first[k] for k in ("3", "4", "32", "37", "41", "49")} == {
        k: original[k] for k in ("3", "4", "32", "37", "41", "49")}
    assert first["39"] == REASON_LATE

    [payment] = report.payments
    assert payment["view"] == "reversed" and payment["timed_out"]
    assert payment["reversal"]["sends"] == 3 and payment["reversal"]["acknowledged"]
    assert report.counts["repeats"] == 2
    assert report.kept_by_subscriber == {}


def test_late_0210_after_the_reversal_started_is_not_kept(network):
    """The gateway answers the 0200 only once it has the switch's 0420: the
    switch timed out and started its reversal before the 0210 existed."""
    payments = []

    def approve_when_reversed(gateway, protocol, mti, fields):
        if mti == "0200":
            payments.append(fields)
            return True  # no answer yet
        if mti == "0420":
            protocol.send(*default_answer("0200", payments[0]))  # the late 0210, then the 0430
        return False

    gateway = network.listen(approve_when_reversed)
    report = run(network, gateway, plan())
    assert [mti for _, mti, _ in gateway.received] == ["0800", "0200", "0420"]
    [payment] = report.payments
    assert payment["view"] == "reversed" and payment["reversal"]["acknowledged"]
    assert payment["late_approvals"] == 1 and payment["late_answers"] == 1
    assert payment["response_code"] is None  # the late answer decided nothing
    assert report.kept_by_subscriber == {}
    assert report.counts["approved"] == 0


def test_reversal_is_repeated_across_a_reconnect(network):
    def drop_first_reversal(gateway, protocol, mti, fields):
        if mti == "0200":
            return True
        if mti == "0420":
            protocol.transport.loseConnection()  # the switch must reconnect, sign on, repeat
            return True
        return False

    gateway = network.listen(drop_first_reversal)
    report = run(network, gateway, plan())
    [payment] = report.payments
    assert payment["view"] == "reversed" and payment["reversal"]["acknowledged"]
    on_second = [mti for n, mti, _ in gateway.received if n == 2]
    assert on_second[0] == "0800" and "0421" in on_second
    assert gateway.mtis("0420")[0][0] == 1
    assert report.link["connections"] >= 2 and report.link["lost"] >= 1


def test_unacknowledged_reversal_stops_at_its_bound(network):
    def never_acknowledge(gateway, protocol, mti, fields):
        return mti in ("0200", "0420", "0421")

    gateway = network.listen(never_acknowledge)
    report = run(network, gateway, plan(max_repeats=4))
    assert len(gateway.mtis("0420", "0421")) == 4
    [payment] = report.payments
    assert payment["view"] == "reversed" and not payment["reversal"]["acknowledged"]
    assert report.counts["unacknowledged_reversals"] == 1 and not report.all_acknowledged


# --- advices ---------------------------------------------------------------------------

def test_advice_repeats_as_0221_until_0230_and_is_kept(network):
    def decline_and_ignore_two_advices(gateway, protocol, mti, fields):
        if mti == "0200":
            protocol.send(*default_answer(mti, fields, code="91"))
            return True
        if mti in ("0220", "0221"):
            return len(gateway.mtis("0220", "0221")) < 3
        return False

    gateway = network.listen(decline_and_ignore_two_advices)
    the_plan = plan(advice_rate=1.0, advice_without_0200_rate=0.0, amount_min=777, amount_max=777)
    report = run(network, gateway, the_plan)

    [(_, _, original)] = gateway.mtis("0200")
    advices = gateway.mtis("0220", "0221")
    assert [mti for _, mti, _ in advices] == ["0220", "0221", "0221"]
    for _, _, f in advices:
        assert {k: v for k, v in f.items() if k != "39"} == original  # the same fields, keys included
        assert f["39"] == REASON_LATE  # the switch's reason
    [payment] = report.payments
    assert payment["view"] == "kept"  # the customer was debited: kept despite the 91
    assert payment["advice"]["acknowledged"] and payment["advice"]["sends"] == 3
    assert payment["payment_reference"] == f"PR{original['11']}{original['7']}"  # from the 0230
    assert report.kept_by_subscriber == {"0790000000": 777}
    assert report.counts["advised"] == 1 and report.counts["approved"] == 0


def test_an_advice_answered_96_is_repeated_until_taken_in(network):
    def malfunction_once(gateway, protocol, mti, fields):
        if mti in ("0220", "0221"):
            first = len(gateway.mtis("0220", "0221")) == 1
            protocol.send(*default_answer(mti, fields, code="96" if first else "00"))
            return True
        return False

    gateway = network.listen(malfunction_once)
    report = run(network, gateway, plan(advice_rate=1.0, advice_without_0200_rate=1.0))
    assert [mti for _, mti, _ in gateway.mtis("0220", "0221")] == ["0220", "0221"]
    [payment] = report.payments
    assert payment["advice"]["acknowledged"] and payment["advice"]["response_code"] == "00"
    assert payment["anomalies"] == [f"0230 answered 96 to 0220 STAN {payment['keys']['stan']}; repeated"]


def test_a_reversal_refused_for_good_is_not_repeated(network):
    def format_error(gateway, protocol, mti, fields):
        if mti == "0200":
            return True
        if mti == "0420":
            protocol.send(*default_answer(mti, fields, code="30"))
            return True
        return False

    gateway = network.listen(format_error)
    report = run(network, gateway, plan())
    assert [mti for _, mti, _ in gateway.mtis("0420", "0421")] == ["0420"]
    assert report.payments[0]["reversal"]["response_code"] == "30"


def test_stand_in_without_a_link_sends_only_the_advice(network):
    gateway = network.listen()
    report = run(network, gateway, plan(advice_rate=1.0, advice_without_0200_rate=1.0, count=2))
    assert gateway.mtis("0200") == []
    assert [mti for _, mti, _ in gateway.mtis("0220", "0221")] == ["0220", "0220"]
    assert [p["view"] for p in report.payments] == ["kept", "kept"]


# --- customer cancel and duplicates ---------------------------------------------------------

def test_customer_cancel_reverses_an_approval(network):
    gateway = network.listen()
    report = run(network, gateway, plan(cancel_rate=1.0, count=2))
    assert [p["view"] for p in report.payments] == ["reversed", "reversed"]
    assert {f["39"] for _, _, f in gateway.mtis("0420")} == {REASON_CUSTOMER_CANCEL}
    assert report.counts["approved"] == 2 and report.counts["cancelled"] == 2
    assert report.kept_by_subscriber == {}


def test_duplicates_are_the_same_bytes_and_counted_once(network):
    def slow_answers(gateway, protocol, mti, fields):
        if mti == "0200":  # slow enough for "outstanding" duplicates to go out first
            protocol.send(*default_answer(mti, fields), delay=0.6)
            return True
        return False

    gateway = network.listen(slow_answers)
    the_plan = plan(duplicate_rate=1.0, count=6, amount_min=500, amount_max=500, answer_timeout=1.0)
    assert {p.duplicate for p in plan_payments(the_plan)} == {"outstanding", "after"}
    report = run(network, gateway, the_plan)
    payments = gateway.mtis("0200")
    assert len(payments) == 12
    by_keys: dict = {}
    for _, _, f in payments:
        by_keys.setdefault((f["32"], f["41"], f["11"], f["7"]), []).append(f)
    assert len(by_keys) == 6 and all(len(v) == 2 and v[0] == v[1] for v in by_keys.values())
    assert report.counts["kept"] == 6 and report.kept_by_subscriber == {"0790000000": 3000}
    assert report.counts["duplicates_sent"] == 6
    assert all(p["anomalies"] == [] for p in report.payments)
    # "after" duplicates waited for their answer; "outstanding" ones got theirs too.
    assert all(p["duplicate_answers"] == 1 for p in report.payments)


def test_a_duplicate_answered_differently_is_an_anomaly(network):
    def approve_then_decline(gateway, protocol, mti, fields):
        if mti == "0200":
            code = "00" if len(gateway.mtis("0200")) == 1 else "94"
            protocol.send(*default_answer(mti, fields, code=code))
            return True
        return False

    gateway = network.listen(approve_then_decline)
    the_plan = plan(duplicate_rate=1.0, seed=0)
    assert plan_payments(the_plan)[0].duplicate == "after"
    report = run(network, gateway, the_plan)
    [payment] = report.payments
    assert payment["view"] == "kept"
    assert payment["anomalies"] == ["duplicate answered 94, first answer 00"]


# --- link problems and bounds -----------------------------------------------------------------

def test_no_gateway_means_nothing_sent_and_nothing_kept(network):
    # Nothing listens on the network: every connection is refused.
    report = network.run(run_switch(network.clock, HOST, PORT, plan(count=3, connect_wait=0.3)))
    assert network.refused >= 1
    assert [p["state"] for p in report.payments] == ["not_sent"] * 3
    assert report.kept_by_subscriber == {} and report.counts["declined"] == 3
    assert report.link.get("connections", 0) == 0


def test_switch_reconnects_when_the_gateway_comes_back(network):
    d = run_switch(network.clock, HOST, PORT, plan(count=1, connect_wait=3.0))
    network.advance(0.5)  # no gateway yet: the switch's connections are refused
    assert network.refused >= 1 and not d.called
    gateway = network.listen()
    report = network.run(d)
    assert [p["view"] for p in report.payments] == ["kept"]
    assert [mti for _, mti, _ in gateway.received][:2] == ["0800", "0200"]


def test_gateway_echo_test_is_answered(network):
    def echo_first(gateway, protocol, mti, fields):
        if mti == "0800":
            protocol.send(*default_answer(mti, fields))
            protocol.send("0800", {"7": "0101000000", "11": "999999", "70": "301"})
            return True
        return False

    gateway = network.listen(echo_first)
    report = run(network, gateway, plan())
    echoes = [f for _, mti, f in gateway.received if mti == "0810"]
    assert echoes and echoes[0]["11"] == "999999" and echoes[0]["39"] == "00"
    assert report.payments[0]["view"] == "kept"


def test_the_plan_is_drawn_from_the_seed():
    the_plan = SwitchPlan(count=400, subscribers=("0790000000", "0790000001"), duplicate_rate=0.2,
                          advice_rate=0.1, cancel_rate=0.1, seed=5)
    drawn = plan_payments(the_plan)
    assert drawn == plan_payments(the_plan)
    assert drawn != plan_payments(dataclasses.replace(the_plan, seed=6))
    roles = [p.role for p in drawn]
    assert 20 <= roles.count("advice") <= 60 and 20 <= roles.count("cancel") <= 60
    assert 50 <= sum(1 for p in drawn if p.duplicate) <= 110
    assert all(the_plan.amount_min <= p.amount <= the_plan.amount_max for p in drawn)
    assert {p.msisdn for p in drawn} == {"962790000000", "962790000001"}


@pytest.mark.parametrize("host", ["10.1.2.3", "gateway.bank.example", "0.0.0.0"])
def test_only_loopback_targets(host):
    with pytest.raises(ValueError, match="loopback"):
        run_switch(MemoryReactorClock(), host, PORT, plan())


@pytest.mark.parametrize("kwargs", [{"count": 0}, {"advice_rate": 0.7, "cancel_rate": 0.7},
                                    {"answer_timeout": 0}, {"duplicate_rate": 1.5}, {"subscribers": ()}])
def test_impossible_plans_are_refused(kwargs):
    with pytest.raises(ValueError):
        plan(**kwargs)


def test_the_end_of_a_run_does_not_wait_for_ever_for_a_connection_to_close():
    """A gateway that stops reading can hold loseConnection open for ever:
    the run still ends, STOP_TIMEOUT after its last payment."""
    from twisted.internet.defer import Deferred
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    from billgw.atm_sim.switch import STOP_TIMEOUT, Switch

    clock = MemoryReactorClock()
    switch = Switch(clock, "127.0.0.1", 8583, plan(connect_wait=1.0, sign_on_timeout=30.0), clock=clock)
    done = Deferred.fromCoroutine(switch.run())
    [(_, _, factory, _, _)] = clock.tcpClients
    transport = StringTransport()  # its loseConnection never reports the connection lost
    factory.buildProtocol(None).makeConnection(transport)
    assert transport.value()[2:6] == b"0800"  # connected: the sign-on went out, never answered
    clock.advance(1.0)  # the payment found no signed-on link: the run is stopping
    assert not done.called and transport.disconnecting
    clock.advance(STOP_TIMEOUT)
    assert [p["state"] for p in done.result.payments] == ["not_sent"]
