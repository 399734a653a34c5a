"""``billgw demo``: its checks name each way a payment can go wrong, and the
command itself (as ``make demo`` runs it) pays a bill of every kind of
biller and reports what it did truthfully.
"""
import datetime as _dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from billgw.billing_adapters.interface import LedgerEntry
from billgw.gateway.demo import PAYMENTS, WATER_PAYMENT, DemoPayment, payment_problems
from billgw.gateway.states import State

BILLGW = str(Path(sys.executable).with_name("billgw"))
PAYMENT = DemoPayment("ELE", "HOME", "2000000001", "23.450", "962795550101", "en", "records")
PID = "a" * 32


@dataclass
class View:
    """The journal's TransactionView fields the check reads."""

    id: str = PID
    kind: str = "payment"
    state: State = State.CONFIRMED
    biller_code: str = "ELE"
    billing_number: str = "2000000001"
    biller_receipt: str = "ER0000000001"


@dataclass
class Sms:
    destination_addr: str = "962795550101"


def entry(payment_id=PID, amount=23_450, receipt="ER0000000001", **flags) -> LedgerEntry:
    return LedgerEntry(payment_id, "2000000001", "EB-1", amount, receipt, posted_at="", **{
        "reversed": False, **flags})


def test_a_payment_approved_confirmed_held_once_and_receipted_once_is_clean():
    assert payment_problems(PAYMENT, True, [View()], [entry()], [Sms()]) == []
    assert PAYMENT.minor_units == 23_450


@pytest.mark.parametrize("approved, views, ledger, messages, expected", [
    (False, [View()], [entry()], [Sms()], "not approved"),
    (True, [], [entry()], [Sms()], "the journal holds 0 payments"),
    (True, [View(), View(id="b" * 32)], [entry()], [Sms()], "the journal holds 2 payments"),
    (True, [View(state=State.IN_DOUBT)], [entry()], [Sms()], "IN_DOUBT in the journal"),
    (True, [View()], [], [Sms()], "the biller holds []"),  # lost
    (True, [View()], [entry(), entry("b" * 32)], [Sms()], "expected once"),  # posted twice
    (True, [View()], [entry(reversed=True)], [Sms()], "the biller holds []"),
    (True, [View()], [entry(amount=23_000)], [Sms()], "expected once"),
    (True, [View()], [entry(pending=True)], [Sms()], "still pending"),
    (True, [View()], [entry(receipt="ER0000000009")], [Sms()], "the biller's receipt ER0000000009"),
    (True, [View()], [entry()], [], "0 SMS to 962795550101"),
    (True, [View()], [entry()], [Sms(), Sms()], "2 SMS to 962795550101"),
])
def test_each_way_a_payment_goes_wrong_is_named(approved, views, ledger, messages, expected):
    problems = payment_problems(PAYMENT, approved, views, ledger, messages)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_demo_pays_a_bill_of_every_kind_of_biller():
    assert {p.biller for p in PAYMENTS + (WATER_PAYMENT,)} == {"TEL", "WTR", "ELE", "WAT"}
    assert len({p.msisdn for p in PAYMENTS + (WATER_PAYMENT,)}) == len(PAYMENTS) + 1  # one phone each


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_billgw_demo_pays_every_bill_and_counts_truthfully(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLGW_")}
    began = _dt.datetime.now()
    done = subprocess.run([BILLGW, "demo", "--workdir", str(tmp_path / "demo")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    paid = len(PAYMENTS) + 1
    assert result["demo"] == "ok"
    assert (result["payments"], result["approved"], result["sms"]) == (paid, paid, paid)
    assert result["billers"] == ["ELE", "TEL", "WAT", "WTR"]
    for title in ("telecom biller ledger", "water biller ledger", "electricity host ledger", "JSON biller ledger"):
        assert title in done.stdout
    print(f"billgw demo: {(_dt.datetime.now() - began).total_seconds():.1f} s")
