"""Chaos: a bank switch's load while the gateway is SIGKILLed and restarted
and the biller misbehaves; afterwards the money must add up.

The pieces run as they do in production: the gateway is its own process
(``billgw --config CFG serve``), killed with SIGKILL at seeded points of the
load (after the Nth payment started, not at a wall-clock moment the load may
already have passed) and started again on the same journal, and once frozen
with SIGSTOP for longer than the switch's answer timeout (the switch
reverses on its other link while the gateway still holds the originals);
the telecom biller (with seeded faults:
slow past the gateway's biller timeout, HTTP 500, posting then dropping,
dropping before posting) and the SMSC simulator live in another process
(``sim_runner.py``) and never stop; the switch (:mod:`billgw.atm_sim.switch`)
runs in the test's reactor, reversing what it got no answer for, advising
stand-ins, cancelling and duplicating, pipelining reversals right behind
their 0200, advising payments outside the service's rules, repeating
0421/0221 across the restarts.  When the load is over the test waits (bounded) until the journal
has nothing left to resolve, then checks:

(a) the biller's ledger holds exactly the payments the switch kept -- by
    payment reference where the switch has one, and per subscriber in sums,
    no more, no fewer; and the gateway acknowledged every reversal and advice;
(b) ``billgw --config CFG audit --ledger TEL=<ledger> --json`` finds
    nothing broken but one EXCEPTION per advice outside the rules (a
    person refunds those; the biller must not hold them);
(c) every SMS is a receipt of a posting the biller holds or a reversal
    notice, no payment got two receipts, and every live posting got one.

A second switch (its own acquirer) pays the water biller at the same time:
its tables in an SQLite file, its batch run every second by ``billgw
water-sim`` in a process of its own.  Its payments are approved on the
intake row (ACCEPTED) and receipted after the batch; the same checks hold
for its ledger (every row booked, none left pending).

A third switch pays the electricity biller: its mainframe-style host
simulator (``billgw electricity-sim``, fixed-width EBCDIC records over one
persistent TCP link) in a process of its own, so each kill of the gateway
drops the link with requests in flight and the next incarnation signs on
again and asks the host about what it never heard back.  The host's ledger
must hold exactly the payments that switch kept, none twice, and every
payment it holds got its receipt.  The audit reads all three ledgers.

Every problem is listed at once, with the figures of the run.  Files (config,
journal, ledger, logs of each gateway incarnation, the switch's report) stay
in the test's tmp_path.  It runs in ``make test``; select it alone with
``-m slow`` or deselect it with ``-m "not slow"``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import time
import types
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from billgw.atm_sim.switch import ROLE_RULE_BREAKING_ADVICE, SwitchPlan, plan_payments, run_switch
from billgw.billing_adapters.electricity.ledger import read_ledger_file as read_electricity_ledger
from billgw.billing_adapters.telecom_sim import extra_subscriber_number, read_ledger
from billgw.billing_adapters.water.adapter import read_water_ledger
from billgw.billing_adapters.water.sim import WaterBillerSim

from chaos_helpers import (
    BIN,
    HERE,
    ChildProcess,
    check_audit,
    check_ledger,
    check_sms,
    uncertain_receipts,
    check_switch_settled,
    free_port,
    journal_keys,
    journal_state,
    read_sms,
    sleep,
    start_electricity_host,
    unresolved,
    wait_for_file,
    wait_for_port,
    within,
    write_gateway_config,
)

SEED = 7
PAYMENTS = 200  # (250 before the electricity share joined: the run's time stays the same)
SUBSCRIBERS = 40
RATE = 10.0  # payments started per second: the load spans ~20 s, the kills fall inside it
KILLS = 4
PAUSES = 1  # SIGSTOP ... SIGCONT
PAUSE_SECONDS = 4.0  # past the switch's ANSWER_TIMEOUT: it reverses what is in flight
ACTION_WINDOW = (20, 190)  # payment indices: the actions fall inside the load
ACTION_GAP = 35  # payments between two actions (3.5 s at RATE: a restart takes ~2 s)
BILLER_TIMEOUT = 2.5  # the gateway's, towards the telecom biller
SLOW_SECONDS = 3.5  # a slow biller answer: past the gateway's timeout
# The switch's own wait for an 0210: shorter than the gateway's biller
# timeout on purpose, so that a slow biller answer makes the switch reverse
# a payment the gateway is still posting (the reversal must win).
ANSWER_TIMEOUT = 2.0
LOAD_BOUND = 70.0  # the switch stops repeating after this
SETTLE_BOUND = 45.0  # the gateway's time to resolve what is left, after the load
FAULTS = ["--fault-slow-rate", "0.05", "--fault-slow-seconds", str(SLOW_SECONDS), "--fault-error-rate", "0.05",
          "--fault-drop-after-post-rate", "0.05", "--fault-drop-before-rate", "0.02", "--seed", str(SEED)]
SMSC_PASSWORD = "chaos-pw"
# The water biller's share: a second, slower switch over the same kills.
WATER_PAYMENTS = 60
WATER_ACCOUNTS = 8
WATER_RATE = 3.0  # ~20 s of load, inside the telecom load's span
WATER_ACQUIRER = "654321"
# Water accounts numbered like Jordanian mobiles (0785000000...): the switch
# texts "962" + the billing number without its 0, which must be a real MSISDN.
WATER_ACCOUNT_BASE = 785_000_000
BATCH_INTERVAL = 1.0  # seconds between the water biller's batch runs
# The electricity biller's share: a third switch, its own acquirer.  Each
# load account has one 10.000 JOD bill taking part payments from 1.000, so
# the amounts are small enough that no account's bill runs out (checked on
# the seeded plan before the run: a decline for "nothing due" would make an
# advised payment a refund case, which is not what this run is about).
ELE_PAYMENTS = 45
ELE_ACCOUNTS = 16
ELE_RATE = 2.5  # ~18 s of load
ELE_AMOUNTS = (1_000, 1_500)
ELE_BILL = 10_000
ELE_ACQUIRER = "765432"
ELE_ACCOUNT_BASE = 786_000_000  # 0786000000...: mobiles, as the water accounts
ELE_PASSWORD = "chaospw"  # the sign-on record's PIC X(8)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def action_schedule(rng: random.Random) -> list[tuple[int, str]]:
    """(payment index, "kill" or "pause"): KILLS + PAUSES points in
    ACTION_WINDOW, at least ACTION_GAP payments apart."""
    actions = ["kill"] * KILLS + ["pause"] * PAUSES
    for _ in range(1000):  # bounded rejection sampling
        points = sorted(rng.sample(range(*ACTION_WINDOW), len(actions)))
        if all(b - a >= ACTION_GAP for a, b in zip(points, points[1:])):
            rng.shuffle(actions)
            return list(zip(points, actions))
    raise AssertionError("no action schedule fits the window")


class Progress:
    """Which payments the switch has started; ``reached(n)`` fires once the
    n-th has, so an action falls at a point of the load, not of the clock."""

    def __init__(self):
        self.started = -1
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def payment_started(self, index: int) -> None:
        self.started = max(self.started, index)
        for n, d in list(self._waiters):
            if self.started >= n:
                self._waiters.remove((n, d))
                d.callback(None)

    def reached(self, n: int) -> defer.Deferred:
        d = defer.Deferred()
        if self.started >= n:
            d.callback(None)
        else:
            self._waiters.append((n, d))
        return d


class Gateway:
    """The gateway process, one incarnation after another on the same journal."""

    def __init__(self, tmp_path, config, port, env):
        self.tmp_path, self.config, self.port, self.env = tmp_path, config, port, env
        self.incarnations: list[ChildProcess] = []

    @property
    def current(self) -> ChildProcess:
        return self.incarnations[-1]

    async def start(self) -> None:
        n = len(self.incarnations) + 1
        child = ChildProcess(reactor, [str(BIN / "billgw"), "--config", str(self.config), "serve"],
                             cwd=self.tmp_path, out=self.tmp_path / f"gateway.{n}.log",
                             err=self.tmp_path / f"gateway.{n}.err", env=self.env)
        self.incarnations.append(child)
        await wait_for_port(reactor, self.port, child, 30.0)

    async def kill(self) -> None:
        await self.current.kill("KILL")

    async def pause(self, seconds: float) -> None:
        """Freeze the process (its sockets stay open, the switch's messages
        queue in them), then let it go on: what it held in flight and what
        queued meanwhile are processed together."""
        self.current.transport.signalProcess(signal.SIGSTOP)  # Twisted names only KILL, TERM, INT
        try:
            await sleep(reactor, seconds)
        finally:
            self.current.transport.signalProcess(signal.SIGCONT)


async def chaos_monkey(gateway: Gateway, schedule: list[tuple[int, str]], progress: Progress,
                       load) -> list[tuple[int, str]]:
    """At each planned point of the load: SIGKILL the gateway and start it
    again after a seeded pause, or SIGSTOP it past the switch's timeout."""
    rng = random.Random(SEED + 1)
    done = []
    for index, action in schedule:
        await within(progress.reached(index), LOAD_BOUND)
        if load.called:
            break
        if action == "kill":
            await gateway.kill()
            await sleep(reactor, rng.uniform(0.2, 1.5))
            await gateway.start()
        else:
            await gateway.pause(PAUSE_SECONDS)
        done.append((index, action))
    return done


async def settle(db_url: str) -> dict:
    """Wait (bounded) until the journal has nothing left to resolve."""
    left = {"journal": 1}
    for _ in range(int(SETTLE_BOUND / 0.5)):
        left = unresolved(await deferToThread(journal_state, db_url))
        if not left:
            break
        await sleep(reactor, 0.5)
    return left


def electricity_plan(plan: SwitchPlan, first_stan: int) -> SwitchPlan:
    """The electricity switch's plan, its accounts' bills big enough for it."""
    ele = dataclasses.replace(
        plan, count=ELE_PAYMENTS, subscribers=tuple(f"{ELE_ACCOUNT_BASE + i:010d}" for i in range(ELE_ACCOUNTS)),
        amount_min=ELE_AMOUNTS[0], amount_max=ELE_AMOUNTS[1], biller="ELE", service="HOME",
        acquirer_id=ELE_ACQUIRER, concurrency=6, rate=ELE_RATE, connections=1, seed=SEED + 3,
        first_stan=(first_stan + 250_000) % 1_000_000)
    owed = Counter()
    for p in plan_payments(ele):
        if p.role != ROLE_RULE_BREAKING_ADVICE:
            owed[p.subscriber] += p.amount
    assert max(owed.values()) <= ELE_BILL, f"an electricity account would run out of bill: {owed.most_common(1)}"
    return ele


@pytest_twisted.ensureDeferred
async def test_money_adds_up_after_kills_and_biller_faults(tmp_path, db_url):
    began = time.monotonic()
    water_url = f"sqlite:///{tmp_path / 'water-biller.sqlite'}"
    env = {**os.environ, "BILLGW_SMPP_PASSWORD": SMSC_PASSWORD, "BILLGW_WATER_DB_URL": water_url}
    ledger, sms_record = tmp_path / "telecom-ledger.sqlite", tmp_path / "smsc-received.jsonl"
    water = WaterBillerSim(water_url)
    await deferToThread(water.create, accounts=WATER_ACCOUNTS, account_base=WATER_ACCOUNT_BASE)
    water.close()
    batch = ChildProcess(reactor, [str(BIN / "billgw"), "water-sim", "--db", water_url, "--batch-interval",
                                   str(BATCH_INTERVAL)],
                         cwd=tmp_path, out=tmp_path / "water-batch.log", err=tmp_path / "water-batch.err", env=env)

    # The biller and the SMSC: their own process, from tmp_path (not the
    # repository root, whose iso8583/ would shadow pyiso8583).
    sims = ChildProcess(reactor, [str(BIN / "python"), str(HERE / "sim_runner.py"), "--telecom-db", str(ledger),
                                  "--smsc-record", str(sms_record), "--ready-file", str(tmp_path / "sims.json"),
                                  "--smsc-password", SMSC_PASSWORD, "--extra-subscribers", str(SUBSCRIBERS),
                                  *FAULTS],
                        cwd=tmp_path, out=tmp_path / "sims.log", err=tmp_path / "sims.err", env=env)
    gateway = ele_host = None
    try:
        ele_host, electricity = await start_electricity_host(
            reactor, tmp_path, env, accounts=ELE_ACCOUNTS, account_base=ELE_ACCOUNT_BASE, password=ELE_PASSWORD)
        ports = await wait_for_file(reactor, tmp_path / "sims.json", sims, 30.0)
        port = free_port()
        config = tmp_path / "billgw.toml"
        write_gateway_config(config, port=port, db_url=db_url, telecom_port=ports["telecom_port"],
                             smsc_port=ports["smsc_port"], biller_timeout=BILLER_TIMEOUT, water=True,
                             electricity=electricity, acquirers=("123456", WATER_ACQUIRER, ELE_ACQUIRER))
        gateway = Gateway(tmp_path, config, port, env)
        await gateway.start()

        first_stan = int(time.time()) % 1_000_000  # as the switch's default, made explicit
        plan = SwitchPlan(
            count=PAYMENTS, subscribers=tuple(extra_subscriber_number(i) for i in range(SUBSCRIBERS)),
            amount_min=1_000, amount_max=250_000, concurrency=30, rate=RATE, connections=2,
            duplicate_rate=0.1, advice_rate=0.06, cancel_rate=0.06, pipelined_reversal_rate=0.05,
            rule_breaking_advice_rate=0.03, seed=SEED, answer_timeout=ANSWER_TIMEOUT,
            repeat_interval=1.0, connect_wait=3.0, max_duration=LOAD_BOUND, max_repeats=200,
            first_stan=first_stan)
        # The water and electricity switches: their own acquirers and STANs
        # far from the telecom switch's, so no two requests of the run share keys.
        water_plan = dataclasses.replace(
            plan, count=WATER_PAYMENTS, subscribers=tuple(f"{WATER_ACCOUNT_BASE + i:010d}" for i in range(WATER_ACCOUNTS)),
            amount_max=50_000, biller="WTR", service="WATER", acquirer_id=WATER_ACQUIRER, concurrency=6,
            rate=WATER_RATE, connections=1, seed=SEED + 2, first_stan=(first_stan + 500_000) % 1_000_000)
        ele_plan = electricity_plan(plan, first_stan)
        progress = Progress()
        schedule = action_schedule(random.Random(SEED))
        load = run_switch(reactor, "127.0.0.1", port, plan, on_payment_started=progress.payment_started)
        water_load = run_switch(reactor, "127.0.0.1", port, water_plan)
        ele_load = run_switch(reactor, "127.0.0.1", port, ele_plan)
        actions = await chaos_monkey(gateway, schedule, progress, load)
        report = await within(load, LOAD_BOUND + 60)
        report.write(tmp_path / "switch-report.json")
        water_report = await within(water_load, LOAD_BOUND + 60)
        water_report.write(tmp_path / "water-switch-report.json")
        ele_report = await within(ele_load, LOAD_BOUND + 60)
        ele_report.write(tmp_path / "electricity-switch-report.json")
        if not gateway.current.running:
            await gateway.start()
        left = await settle(db_url)

        postings = await deferToThread(read_ledger, ledger)
        water_entries = await deferToThread(read_water_ledger, water.tables, water_url)
        ele_postings = await deferToThread(read_electricity_ledger, str(electricity.ledger))
        audit_out, audit_err, audit_code = await within(getProcessOutputAndValue(
            str(BIN / "billgw"), ["--config", str(config), "audit", "--ledger", f"TEL={ledger}",
                                  "--ledger", f"WTR={water_url}", "--ledger", f"ELE={electricity.ledger}",
                                  "--json"],
            env=env, path=str(tmp_path), reactor=reactor), 120)
        keys_by_id = await deferToThread(journal_keys, db_url)
    finally:
        if gateway is not None and gateway.incarnations and gateway.current.running:
            await gateway.current.kill("TERM")
        await sims.kill("TERM")
        if ele_host is not None:
            await ele_host.kill("TERM")
        if batch.running:
            await batch.kill("TERM")
    # Read only once the SMSC simulator has stopped: it writes its record on
    # its own thread, and stopping flushes every line.
    messages = read_sms(sms_record)

    counts = report.counts
    faults = Counter(json.loads(line).get("fault") for line in (tmp_path / "sims.log").read_text().splitlines()
                     if "telecom_sim_fault_injected" in line)
    kills = [index for index, action in actions if action == "kill"]
    print(f"\nchaos ({db_url.split(':')[0]}): {counts['payments']} payments in {report.duration:.1f} s, "
          f"actions {', '.join(f'{action} after #{index}' for index, action in actions)}; "
          f"biller faults {dict(faults)}")
    print(report.summary())
    print("roles: " + ", ".join(f"{role} {n}" for role, n in sorted(Counter(p["role"] for p in report.payments).items())))
    gateway_errors = Counter(
        json.loads(line).get("event") for child in gateway.incarnations if child.out.exists()
        for line in child.out.read_text("utf-8", "replace").splitlines() if '"level": "error"' in line)
    anomalies = [a for p in report.payments for a in p["anomalies"]]
    print(f"gateway error events: {dict(gateway_errors) or 'none'}; switch anomalies: {len(anomalies)} "
          + "; ".join(anomalies[:5]))
    live = [p for p in postings if not p.reversed]
    print(f"biller ledger: {len(live)} live postings, {len(postings) - len(live)} reversed; "
          f"SMS received: {len(messages)}; unresolved after settling: {left or 'nothing'}; "
          f"audit exit {audit_code}; total {time.monotonic() - began:.0f} s; files in {tmp_path}")

    booked = [e for e in water_entries if e.held and not e.pending]
    print(f"water switch: {water_report.summary()}")
    print(f"water ledger: {len(booked)} booked, {len(water_entries) - len(booked)} withdrawn, reversed, "
          "rejected or pending")
    ele_live = [p for p in ele_postings if not p.reversed]
    print(f"electricity switch: {ele_report.summary()}")
    print(f"electricity host ledger: {len(ele_live)} live payments, {len(ele_postings) - len(ele_live)} reversed")

    problems = []
    if not booked:
        problems.append("water: the biller booked no payment (the water share of the load did not run)")
    if not ele_live:
        problems.append("electricity: the host holds no payment (the electricity share of the load did not run)")
    if actions != schedule:
        problems.append(f"the load ended before the planned actions: done {actions}, planned {schedule}")
    if left:
        problems.append(f"the gateway did not resolve everything within {SETTLE_BOUND} s: {left}")
    problems += check_switch_settled(report)
    problems += check_ledger(report, postings)
    # The water ledger: rejected or withdrawn rows hold nothing; none may be
    # left pending once the gateway has settled (the batch runs every second).
    water_postings = [dataclasses.replace(e, reversed=not e.held) for e in water_entries]
    pending = [e.payment_id for e in water_entries if e.pending]
    if pending:
        problems.append(f"water: {len(pending)} intake rows still pending after settling: {pending[:5]}")
    problems += [f"water: {p}" for p in check_switch_settled(water_report)]
    problems += [f"water: {p}" for p in check_ledger(water_report, water_postings)]
    # The electricity host: exactly what its switch kept, none twice (a
    # payment posted again after a lost answer would be a second live
    # payment of the same account and amount the switch has no reference for).
    problems += [f"electricity: {p}" for p in check_switch_settled(ele_report)]
    problems += [f"electricity: {p}" for p in check_ledger(ele_report, ele_postings)]
    try:
        audit = json.loads(audit_out)
    except ValueError:
        problems.append(f"billgw audit exited {audit_code} without a report: "
                        f"{(audit_out + audit_err).decode('utf-8', 'replace')[-2000:]}")
    else:
        every = types.SimpleNamespace(payments=report.payments + water_report.payments + ele_report.payments)
        problems += check_audit(audit, every, keys_by_id)
    uncertain = await deferToThread(uncertain_receipts, db_url)
    if len(uncertain) > 10 * len(kills):  # a kill interrupts at most a window (sms.window = 10) of submits
        problems.append(f"{len(uncertain)} receipts UNCERTAIN after {len(kills)} kills")
    problems += check_sms(messages, list(postings) + water_postings + ele_postings, uncertain)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
