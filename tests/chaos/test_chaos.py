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

(a) each biller's ledger holds exactly the payments its switch kept -- by
    payment reference where the switch has one, and per subscriber in sums,
    no more, no fewer; and the gateway acknowledged every reversal and advice;
(b) ``billgw --config CFG audit --ledger TEL=<ledger> ... --json`` finds
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
payment it holds got its receipt.

A fourth switch pays a JSON biller (the example's WAT, added by
configuration alone), its simulator beside the telecom's in the simulators'
process, its ledger read through the interface's reconciliation listing.

The audit reads all four ledgers.  The shares are sized so the whole run
stays ~40 s per database.

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
import time
import types
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from billgw.atm_sim.switch import ROLE_RULE_BREAKING_ADVICE, SwitchPlan, plan_payments, run_switch
from billgw.billing_adapters.electricity.ledger import read_ledger_file as read_electricity_ledger
from billgw.billing_adapters.json_biller.adapter import read_json_ledger
from billgw.billing_adapters.telecom_sim import extra_subscriber_number, read_ledger
from billgw.billing_adapters.water.adapter import read_water_ledger
from billgw.billing_adapters.water.sim import WaterBillerSim

from chaos_gateway import Gateway, Progress, action_schedule, chaos_monkey, settle
from chaos_helpers import (
    BIN,
    HERE,
    ChildProcess,
    check_audit,
    check_ledger,
    check_sms,
    check_switch_settled,
    free_port,
    journal_keys,
    read_sms,
    start_electricity_host,
    uncertain_receipts,
    wait_for_file,
    within,
    write_gateway_config,
)

SEED = 7
PAYMENTS = 180  # (250 before the electricity and JSON shares joined: the run's time stays ~the same)
SUBSCRIBERS = 40
RATE = 10.0  # payments started per second: the load spans ~18 s, the kills fall inside it
KILLS = 4
PAUSES = 1  # SIGSTOP ... SIGCONT
PAUSE_SECONDS = 4.0  # past the switch's ANSWER_TIMEOUT: it reverses what is in flight
ACTION_WINDOW = (20, 170)  # payment indices: the actions fall inside the load
ACTION_GAP = 32  # payments between two actions (3.2 s at RATE: a restart takes ~2 s)
BILLER_TIMEOUT = 2.5  # the gateway's, towards every biller
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
# The other billers' shares: slower switches over the same kills, each its
# own acquirer, their accounts numbered like Jordanian mobiles (07xx...):
# the switch texts "962" + the billing number without its 0, which must be
# a real MSISDN.
WATER_PAYMENTS = 45
WATER_ACCOUNTS = 8
WATER_RATE = 2.5  # ~18 s of load, as the telecom's (and the other shares')
WATER_ACQUIRER = "654321"
WATER_ACCOUNT_BASE = 785_000_000
BATCH_INTERVAL = 1.0  # seconds between the water biller's batch runs
# The electricity host: each load account has one 10.000 JOD bill taking
# part payments from 1.000, so the amounts are small enough that no
# account's bill runs out (checked on the seeded plan before the run: a
# decline for "nothing due" would make an advised payment a refund case,
# which is not what this run is about).
ELE_PAYMENTS = 36
ELE_ACCOUNTS = 16
ELE_RATE = 2.0
ELE_AMOUNTS = (1_000, 1_500)
ELE_BILL = 10_000
ELE_ACQUIRER = "765432"
ELE_ACCOUNT_BASE = 786_000_000
ELE_PASSWORD = "chaospw"  # the sign-on record's PIC X(8)
JSON_PAYMENTS = 27
JSON_ACCOUNTS = 8
JSON_RATE = 1.5
JSON_ACQUIRER = "876543"
JSON_ACCOUNT_BASE = 787_000_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclasses.dataclass
class Share:
    """One biller's share of the load: its switch's plan and report, and
    what the biller's ledger holds afterwards."""

    biller: str
    plan: SwitchPlan
    load: object = None  # the switch's Deferred
    report: object = None
    postings: list = dataclasses.field(default_factory=list)

    def problems(self) -> list[str]:
        live = [p for p in self.postings if not p.reversed]
        problems = [] if live else [f"the biller holds no payment (the {self.biller} share of the load did not run)"]
        problems += check_switch_settled(self.report) + check_ledger(self.report, self.postings)
        return [f"{self.biller}: {p}" for p in problems]


def shares_of(plan: SwitchPlan, first_stan: int) -> dict[str, Share]:
    """The water, electricity and JSON switches beside the telecom's, with
    STANs far from each other's, so no two requests of the run share keys."""
    def share(biller, service, count, accounts, base, rate, acquirer, seed, offset, amounts=(1_000, 50_000)):
        return Share(biller, dataclasses.replace(
            plan, count=count, subscribers=tuple(f"{base + i:010d}" for i in range(accounts)),
            amount_min=amounts[0], amount_max=amounts[1], biller=biller, service=service, acquirer_id=acquirer,
            concurrency=6, rate=rate, connections=1, seed=SEED + seed,
            first_stan=(first_stan + offset) % 1_000_000))

    shares = {
        "WTR": share("WTR", "WATER", WATER_PAYMENTS, WATER_ACCOUNTS, WATER_ACCOUNT_BASE, WATER_RATE,
                     WATER_ACQUIRER, 2, 500_000),
        "ELE": share("ELE", "HOME", ELE_PAYMENTS, ELE_ACCOUNTS, ELE_ACCOUNT_BASE, ELE_RATE, ELE_ACQUIRER, 3,
                     250_000, ELE_AMOUNTS),
        "WAT": share("WAT", "HOME", JSON_PAYMENTS, JSON_ACCOUNTS, JSON_ACCOUNT_BASE, JSON_RATE, JSON_ACQUIRER, 4,
                     750_000),
    }
    owed = Counter()
    for p in plan_payments(shares["ELE"].plan):
        if p.role != ROLE_RULE_BREAKING_ADVICE:
            owed[p.subscriber] += p.amount
    assert max(owed.values()) <= ELE_BILL, f"an electricity account would run out of bill: {owed.most_common(1)}"
    return shares


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

    # The telecom and JSON billers and the SMSC: their own process, from
    # tmp_path (not the repository root, whose iso8583/ would shadow pyiso8583).
    sims = ChildProcess(reactor, [str(BIN / "python"), str(HERE / "sim_runner.py"), "--telecom-db", str(ledger),
                                  "--smsc-record", str(sms_record), "--ready-file", str(tmp_path / "sims.json"),
                                  "--smsc-password", SMSC_PASSWORD, "--extra-subscribers", str(SUBSCRIBERS),
                                  "--json-accounts", str(JSON_ACCOUNTS), "--json-account-base",
                                  str(JSON_ACCOUNT_BASE), *FAULTS],
                        cwd=tmp_path, out=tmp_path / "sims.log", err=tmp_path / "sims.err", env=env)
    gateway = ele_host = None
    try:
        ele_host, electricity = await start_electricity_host(
            reactor, tmp_path, env, accounts=ELE_ACCOUNTS, account_base=ELE_ACCOUNT_BASE, password=ELE_PASSWORD)
        ports = await wait_for_file(reactor, tmp_path / "sims.json", sims, 30.0)
        json_url = f"http://127.0.0.1:{ports['json_port']}/api/v1"
        port = free_port()
        config = tmp_path / "billgw.toml"
        write_gateway_config(config, port=port, db_url=db_url, telecom_port=ports["telecom_port"],
                             smsc_port=ports["smsc_port"], biller_timeout=BILLER_TIMEOUT, water=True,
                             electricity=electricity, json_port=ports["json_port"],
                             acquirers=("123456", WATER_ACQUIRER, ELE_ACQUIRER, JSON_ACQUIRER))
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
        shares = shares_of(plan, first_stan)
        progress = Progress()
        schedule = action_schedule(random.Random(SEED), kills=KILLS, pauses=PAUSES, window=ACTION_WINDOW,
                                   gap=ACTION_GAP)
        load = run_switch(reactor, "127.0.0.1", port, plan, on_payment_started=progress.payment_started)
        for share in shares.values():
            share.load = run_switch(reactor, "127.0.0.1", port, share.plan)
        actions = await chaos_monkey(gateway, schedule, progress, load, seed=SEED + 1, bound=LOAD_BOUND,
                                     pause_seconds=PAUSE_SECONDS)
        report = await within(load, LOAD_BOUND + 60)
        report.write(tmp_path / "switch-report.json")
        for share in shares.values():
            share.report = await within(share.load, LOAD_BOUND + 60)
            share.report.write(tmp_path / f"switch-report-{share.biller}.json")
        if not gateway.current.running:
            await gateway.start()
        left = await settle(db_url, SETTLE_BOUND)

        postings = await deferToThread(read_ledger, ledger)
        water_entries = await deferToThread(read_water_ledger, water.tables, water_url)
        # Rejected or withdrawn intake rows hold nothing.
        shares["WTR"].postings = [dataclasses.replace(e, reversed=not e.held) for e in water_entries]
        shares["ELE"].postings = await deferToThread(read_electricity_ledger, str(electricity.ledger))
        shares["WAT"].postings = await deferToThread(read_json_ledger, json_url)
        audit_out, audit_err, audit_code = await within(getProcessOutputAndValue(
            str(BIN / "billgw"), ["--config", str(config), "audit", "--ledger", f"TEL={ledger}",
                                  "--ledger", f"WTR={water_url}", "--ledger", f"ELE={electricity.ledger}",
                                  "--ledger", f"WAT={json_url}", "--json"],
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
    for share in shares.values():
        held = [p for p in share.postings if not p.reversed]
        print(f"{share.biller} switch: {share.report.summary()}")
        print(f"{share.biller} ledger: {len(held)} held, {len(share.postings) - len(held)} reversed, withdrawn "
              "or rejected")

    problems = []
    if actions != schedule:
        problems.append(f"the load ended before the planned actions: done {actions}, planned {schedule}")
    if left:
        problems.append(f"the gateway did not resolve everything within {SETTLE_BOUND} s: {left}")
    problems += check_switch_settled(report)
    problems += check_ledger(report, postings)
    # None may be left pending in the water intake once the gateway has
    # settled (the batch runs every second).
    pending = [e.payment_id for e in water_entries if e.pending]
    if pending:
        problems.append(f"WTR: {len(pending)} intake rows still pending after settling: {pending[:5]}")
    for share in shares.values():
        problems += share.problems()
    try:
        audit = json.loads(audit_out)
    except ValueError:
        problems.append(f"billgw audit exited {audit_code} without a report: "
                        f"{(audit_out + audit_err).decode('utf-8', 'replace')[-2000:]}")
    else:
        every = types.SimpleNamespace(payments=report.payments + [p for share in shares.values()
                                                                  for p in share.report.payments])
        problems += check_audit(audit, every, keys_by_id)
    uncertain = await deferToThread(uncertain_receipts, db_url)
    if len(uncertain) > 10 * len(kills):  # a kill interrupts at most a window (sms.window = 10) of submits
        problems.append(f"{len(uncertain)} receipts UNCERTAIN after {len(kills)} kills")
    problems += check_sms(messages, list(postings) + [p for share in shares.values() for p in share.postings],
                          uncertain)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
