"""Helpers of the chaos test: the processes, the journal and ledger reads,
and the checks of the money against the switch (the gateway's configuration
is :mod:`chaos_config`, its names importable from here too).

A module with a unique name (the tests folders have no __init__.py).  The
checks are plain functions returning a list of problems, each a sentence
naming the payment, so that one run reports every broken promise at once.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections import Counter
from pathlib import Path

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from billgw.atm_sim.switch import ROLE_RULE_BREAKING_ADVICE

from chaos_config import (  # noqa: F401 (importable from here, as before)
    ElectricityHost,
    set_toml,
    water_biller_tables,
    write_gateway_config,
)

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# ACCEPTED too: approved, but its receipt waits for the water biller's batch.
UNRESOLVED_STATES = ("RECEIVED", "POSTING", "IN_DOUBT", "REVERSING", "ACCEPTED")
SMS_PENDING_STATES = ("WAITING", "QUEUED", "SENDING", "FAILED")


def free_port() -> int:
    """A loopback port nobody listens on right now (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes ---------------------------------------------------------------------

class _Watched(protocol.ProcessProtocol):
    def __init__(self):
        self.ended: defer.Deferred = defer.Deferred()
        self.exit = None

    def processEnded(self, reason):
        self.exit = reason.value
        self.ended.callback(reason.value)


class ChildProcess:
    """A child with stdout/stderr going to files, stoppable by its id only."""

    def __init__(self, reactor, argv: list[str], *, cwd: Path, out: Path, err: Path, env: dict):
        self.argv = argv
        self.out, self.err = out, err
        self.watch = _Watched()
        fds = {0: os.open(os.devnull, os.O_RDONLY), 1: os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND),
               2: os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND)}
        try:
            self.transport = reactor.spawnProcess(self.watch, argv[0], argv, env=env, path=str(cwd),
                                                  childFDs=fds)
        finally:
            for fd in fds.values():
                os.close(fd)  # the child has its own copies
        self.pid = self.transport.pid

    @property
    def running(self) -> bool:
        return not self.watch.ended.called

    async def kill(self, signal: str = "KILL", wait: float = 15.0) -> None:
        if self.running:
            self.transport.signalProcess(signal)
        await within(self.watch.ended, wait)

    def tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.out, self.err):
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
        return text


def within(d: defer.Deferred, seconds: float) -> defer.Deferred:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


async def sleep(reactor, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_for_port(reactor, port: int, child: ChildProcess, bound: float) -> None:
    """Until something accepts on ``port``; fails at once if ``child`` died."""
    for _ in range(int(bound / 0.1) + 1):
        if not child.running:
            raise RuntimeError(f"{child.argv[0]} exited ({child.watch.exit}) before listening:\n{child.tail()}")
        try:
            proto = await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1),
                                                 protocol.Protocol()), 2)
            proto.transport.loseConnection()
            return
        except Exception:
            await sleep(reactor, 0.1)
    raise RuntimeError(f"nothing listens on {port} after {bound} s:\n{child.tail()}")


async def wait_for_line(reactor, path: Path, pattern: str, child: ChildProcess, bound: float) -> re.Match:
    """Until a line of ``path`` (a child's stdout) matches ``pattern``."""
    for _ in range(int(bound / 0.1) + 1):
        if path.exists():
            for line in path.read_text("utf-8", "replace").splitlines():
                match = re.search(pattern, line)
                if match:
                    return match
        if not child.running:
            raise RuntimeError(f"{child.argv[0]} exited before it was ready:\n{child.tail()}")
        await sleep(reactor, 0.1)
    raise RuntimeError(f"no line matching {pattern!r} in {path} within {bound} s:\n{child.tail()}")


async def start_electricity_host(reactor, tmp_path: Path, env: dict, *, accounts: int, account_base: int,
                                 password: str) -> tuple[ChildProcess, ElectricityHost]:
    """``billgw electricity-sim`` in a process of its own (the host lives on
    while the gateway is killed), on a port the system picks, which its
    start-up line names; ``accounts`` load accounts from ``account_base``."""
    ledger = tmp_path / "electricity-ledger.sqlite"
    child = ChildProcess(reactor, [str(BIN / "billgw"), "electricity-sim", "--listen", "tcp:0:interface=127.0.0.1",
                                   "--db", str(ledger), "--password", password, "--extra-accounts", str(accounts),
                                   "--extra-account-base", str(account_base)],
                         cwd=tmp_path, out=tmp_path / "electricity-host.log", err=tmp_path / "electricity-host.err",
                         env=env)
    match = await wait_for_line(reactor, child.out, r"listening on 127\.0\.0\.1:(\d+) ", child, 30.0)
    return child, ElectricityHost(port=int(match.group(1)), ledger=ledger, password=password)


async def wait_for_file(reactor, path: Path, child: ChildProcess, bound: float) -> dict:
    for _ in range(int(bound / 0.1) + 1):
        if path.exists():
            return json.loads(path.read_text("utf-8"))
        if not child.running:
            raise RuntimeError(f"{child.argv[0]} exited before it was ready:\n{child.tail()}")
        await sleep(reactor, 0.1)
    raise RuntimeError(f"{path} did not appear within {bound} s:\n{child.tail()}")


# --- reading the journal (blocking: run in a thread) -----------------------------------

def journal_state(db_url: str) -> dict[str, dict[str, int]] | None:
    """Counts per state of transactions, biller_outbox and sms_outbox, read
    only; None while the schema does not exist yet."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    if db_url.startswith("sqlite:///"):
        path = Path(db_url[len("sqlite:///"):])
        if not path.exists():
            return None
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        options = {}
    else:
        engine = create_engine(db_url)
        options = {"postgresql_readonly": True}
    try:
        with engine.connect().execution_options(**options) as conn:
            out = {}
            for table in ("transactions", "biller_outbox", "sms_outbox"):
                rows = conn.execute(text(f"SELECT state, count(*) FROM {table} GROUP BY state")).all()
                out[table] = {state: count for state, count in rows}
            return out
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def uncertain_receipts(db_url: str) -> frozenset[str]:
    """Payment ids whose receipt row is UNCERTAIN (sender died mid-submit)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT payment_id FROM sms_outbox WHERE kind IN ('receipt', "
                                     "'reversal_notice') AND state = 'UNCERTAIN'")).all()
        return frozenset(r.payment_id for r in rows)
    finally:
        engine.dispose()


def unresolved(state: dict[str, dict[str, int]] | None) -> dict[str, int]:
    """What the gateway still has to settle: empty when all is resolved."""
    if state is None:
        return {"journal": 1}
    left = {f"transactions.{s}": n for s, n in state["transactions"].items() if s in UNRESOLVED_STATES}
    left.update({f"biller_outbox.{s}": n for s, n in state["biller_outbox"].items() if s == "PENDING"})
    left.update({f"sms_outbox.{s}": n for s, n in state["sms_outbox"].items() if s in SMS_PENDING_STATES})
    return left


# --- the checks ---------------------------------------------------------------------------

# The telecom's, the water batch's, the electricity host's, the JSON biller's.
RECEIPT_NUMBER = re.compile(r"\b[TWEJ]R\d{10}\b")
REFERENCE = re.compile(r"\b[0-9a-f]{32}\b")


def describe(payment: dict) -> str:
    keys = payment["keys"]
    return (f"payment #{payment['index']} ({keys['terminal_id']} STAN {keys['stan']} F7 "
            f"{keys['transmission_datetime']}, {payment['subscriber']}, {payment['amount']}, role "
            f"{payment['role']}, view {payment['view']}, F39 {payment['response_code']}, ref "
            f"{payment['payment_reference']})")


def owed_to_biller(payment: dict) -> bool:
    """The switch kept the customer's money for the biller -- unless it was
    an advice outside the service's rules, which the gateway must refuse
    (an EXCEPTION for a person to refund), never post."""
    return payment["view"] == "kept" and payment["role"] != ROLE_RULE_BREAKING_ADVICE


def check_ledger(report, postings) -> list[str]:
    """(a) The biller holds exactly the switch's kept payments."""
    problems = []
    live = [p for p in postings if not p.reversed]
    by_id = {p.payment_id: p for p in postings}
    kept = [p for p in report.payments if owed_to_biller(p)]
    for payment in kept:
        ref = payment["payment_reference"]
        if ref is None:
            continue  # an advice that never got an 0210: only the sums can show it
        posting = by_id.get(ref)
        if posting is None:
            problems.append(f"kept {describe(payment)}: the biller has no posting {ref}")
        elif posting.reversed:
            problems.append(f"kept {describe(payment)}: the biller reversed it")
        elif (posting.subscriber, posting.amount) != (payment["subscriber"], payment["amount"]):
            problems.append(f"kept {describe(payment)}: the biller posted {posting.amount} to {posting.subscriber}")
    for payment in report.payments:
        ref = payment["payment_reference"]
        if not owed_to_biller(payment) and ref in by_id and not by_id[ref].reversed:
            problems.append(f"{payment['view']} {describe(payment)}: the biller still holds posting {ref}")
    kept_refs = {p["payment_reference"] for p in kept}
    other_refs = {p["payment_reference"] for p in report.payments if not owed_to_biller(p)}
    unknown = [p for p in live if p.payment_id not in kept_refs | other_refs]
    anonymous_kept = [p for p in kept if p["payment_reference"] is None]
    if len(unknown) > len(anonymous_kept):
        problems.append(f"the biller holds {len(unknown)} postings the switch has no reference for, but only "
                        f"{len(anonymous_kept)} kept payments lack a reference: "
                        + ", ".join(f"{p.payment_id} {p.subscriber} {p.amount}" for p in unknown[:10]))
    if len(live) != len(kept):
        problems.append(f"the biller holds {len(live)} live postings, the switch kept {len(kept)} payments")
    ledger_sums: Counter[str] = Counter()
    for p in live:
        ledger_sums[p.subscriber] += p.amount
    switch_sums: Counter[str] = Counter()
    for payment in kept:
        switch_sums[payment["subscriber"]] += payment["amount"]
    for subscriber in sorted(set(ledger_sums) | set(switch_sums)):
        if ledger_sums.get(subscriber, 0) != switch_sums.get(subscriber, 0):
            problems.append(f"subscriber {subscriber}: the biller holds {ledger_sums.get(subscriber, 0)}, "
                            f"the switch kept {switch_sums.get(subscriber, 0)}")
    return problems


def switch_keys(payment: dict) -> tuple[str, str, str]:
    keys = payment["keys"]
    return (keys["terminal_id"], keys["stan"], keys["transmission_datetime"])


def check_audit(audit: dict, report, journal_keys: dict[str, tuple[str, str, str]]) -> list[str]:
    """(b) ``billgw audit --json`` finds nothing broken, except exactly one
    EXCEPTION per advice the switch sent outside the service's rules (the
    customer was debited for a payment the gateway must not post: a person
    refunds it).  ``journal_keys`` maps each journal id to its terminal,
    STAN and F7, which is how the switch knows its payments."""
    problems = []
    refused = {switch_keys(p): p for p in report.payments
               if p["role"] == ROLE_RULE_BREAKING_ADVICE and p["advice"] and p["advice"]["acknowledged"]}
    excepted = set()
    for finding in audit["findings"]:
        keys = journal_keys.get(finding["payment_id"])
        if finding["category"] == "exception" and keys in refused:
            excepted.add(keys)
            continue
        problems.append(f"audit: {finding['category']} {finding['payment_id']}: {finding['message']}")
    for keys in sorted(set(refused) - excepted):
        problems.append(f"advice outside the rules {describe(refused[keys])}: no EXCEPTION in the audit")
    return problems


def journal_keys(db_url: str) -> dict[str, tuple[str, str, str]]:
    """Each journal id's terminal, STAN and F7 (blocking: run in a thread)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, terminal_id, stan, transmission_dt FROM transactions")).all()
        return {r.id: (r.terminal_id, r.stan, r.transmission_dt) for r in rows}
    finally:
        engine.dispose()


def check_switch_settled(report) -> list[str]:
    """The gateway acknowledged every reversal and advice the switch sent."""
    problems = []
    for payment in report.payments:
        for kind in ("reversal", "advice"):
            exchange = payment[kind]
            if exchange and not exchange["acknowledged"]:
                problems.append(f"{kind} of {describe(payment)} never acknowledged after {exchange['sends']} sends")
            elif exchange and exchange["response_code"] != "00":
                problems.append(f"{kind} of {describe(payment)} answered {exchange['response_code']}")
    return problems


def read_sms(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def check_sms(messages: list[dict], postings, uncertain: frozenset[str] = frozenset()) -> list[str]:
    """(c) Every SMS is a receipt of a posting the biller holds, or a
    reversal notice; one receipt per payment; a receipt of a posting later
    reversed is followed by its reversal notice; (d) every live posting got
    its receipt, sent to its subscriber's phone -- except a receipt the
    gateway marked UNCERTAIN (``uncertain``: its sender was killed in the
    middle of that very submit, so the SMSC may or may not have it, and it
    is never sent twice)."""
    problems = []
    by_receipt = {p.receipt_number: p for p in postings}
    live_ids = {p.payment_id for p in postings if not p.reversed}
    receipts: Counter[str] = Counter()
    notices: Counter[str] = Counter()
    receipt_refs: dict[str, str] = {}
    for message in messages:
        text = message["text"]
        number = RECEIPT_NUMBER.search(text)
        refs = REFERENCE.findall(text)
        if number:
            posting = by_receipt.get(number.group(0))
            if posting is None:
                problems.append(f"receipt SMS to {message['destination_addr']} for {number.group(0)}, "
                                "which the biller does not hold")
                continue
            receipts[posting.payment_id] += 1
            receipt_refs[posting.payment_id] = message["destination_addr"]
            if refs and refs[0] != posting.payment_id:
                problems.append(f"receipt SMS {number.group(0)} quotes ref {refs[0]}, the biller's is "
                                f"{posting.payment_id}")
            if message["destination_addr"].lstrip("+") != "962" + posting.subscriber.lstrip("0"):
                problems.append(f"receipt SMS {number.group(0)} went to {message['destination_addr']}, "
                                f"not to subscriber {posting.subscriber}")
        elif refs:
            notices[refs[0]] += 1
            if refs[0] in live_ids:
                problems.append(f"reversal notice for {refs[0]}, which the biller holds (not reversed)")
        else:
            problems.append(f"SMS to {message['destination_addr']} is neither a receipt nor a reversal "
                            f"notice: {text[:80]!r}")
    for payment_id, count in receipts.items():
        if count > 1:
            problems.append(f"payment {payment_id} got {count} receipts")
        if payment_id not in live_ids and notices[payment_id] == 0 and payment_id not in uncertain:
            problems.append(f"payment {payment_id} was reversed at the biller after its receipt, "
                            "and no reversal notice followed")
    for ref, count in notices.items():
        if count > 1:
            problems.append(f"payment {ref} got {count} reversal notices")
    for payment_id in sorted(live_ids - set(receipts) - set(uncertain)):
        problems.append(f"posting {payment_id} is held by the biller but its subscriber got no receipt")
    return problems
