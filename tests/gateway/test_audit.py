"""``billgw audit`` against a real journal (SQLite, and PostgreSQL when
configured) and real simulator ledger files: each broken invariant is built
from rows in the real tables and must come out as exactly the expected
findings, with exit status 1; a consistent world exits 0; usage and
configuration errors exit 2; no card number ever reaches the output."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
from collections import Counter

import pytest
from sqlalchemy import insert

from billgw.billing_adapters.telecom_sim import (
    Posting,
    PostPaymentRequest,
    ledger_create,
    ledger_post_payment,
    ledger_reverse_payment,
)
from billgw.gateway import audit as audit_mod
from billgw.gateway.audit import (
    BROKEN_CATEGORIES,
    BillerOutboxRow,
    JournalRow,
    ReversalRow,
    SmsRow,
    audit,
)
from billgw.gateway.cli import main
from billgw.gateway.schema import biller_outbox, reversals, transactions
from billgw.sms.outbox import sms_outbox

FULL_PAN = "4761739001010010"
MASKED_PAN = "476173******0010"
NOW = dt.datetime(2026, 11, 22, 10, 30, 0)
# The seeded subscriber and bill with the most room for postings (120.000 JOD).
SUBSCRIBER, BILL = "0788888888", "TB-2024-000602"

CONFIG = """\
[database]
url = "{url}"
auto_upgrade = false

# The worlds below are dated 2026-11-22: a queued receipt in them is not
# "stuck" for these tests (that rule: tests/gateway/test_audit_sms_health.py).
[sms]
queued_alert_after = 3153600000.0

[billers.TEL]
name_en = "Jordan Telecom"
adapter = "telecom_soap"
[billers.TEL.services.MOBILE]
currency = "400"
currency_code = "JOD"
exponent = 3

[billers.TEL2]
name_en = "Second Telecom"
adapter = "telecom_soap"
[billers.TEL2.services.MOBILE]
currency = "400"
currency_code = "JOD"
exponent = 3

[billers.WAT]
name_en = "Water Authority"
adapter = "water_files"
[billers.WAT.services.HOME]
currency = "400"
currency_code = "JOD"
exponent = 3
"""


# --- building the world -------------------------------------------------------

class World:
    """Rows for the journal's real tables and postings for real ledger files."""

    def __init__(self, conn):
        self.conn = conn
        self._stan = itertools.count(1)
        self._reversal_stan = itertools.count(500)
        self.postings: dict[str, list[tuple[str, int]]] = {}
        self.reversed: dict[str, list[str]] = {}

    def txn(self, txn_id, state, *, kind="payment", amount=1000, biller="TEL", msisdn="962791234567",
            masked_pan=MASKED_PAN, stan=None, local_problem=None, currency="400", **flags):
        stan = stan or f"{next(self._stan):06d}"
        service = "HOME" if biller == "WAT" else "MOBILE"  # each biller's service in CONFIG
        self.conn.execute(insert(transactions).values(
            id=txn_id, kind=kind, mti="0200", processing_code="500000" if kind == "payment" else "370000",
            acquirer_id="12345", forwarder_id=None, terminal_id="ATM00001", stan=stan,
            transmission_dt="1122103000", rrn=f"63270000{stan[-4:]}", fingerprint="f" * 64,
            masked_pan=masked_pan, amount=amount if kind == "payment" else 0, currency=currency, fee=0,
            biller_code=biller, service_code=service, billing_number=SUBSCRIBER, bill_number=BILL,
            msisdn=msisdn if kind == "payment" else None, language="en", state=state,
            local_problem=local_problem, created_at=NOW, updated_at=NOW, **flags))
        return txn_id

    def sms(self, payment_id, state, *, kind="receipt", attempts=1):
        self.conn.execute(insert(sms_outbox).values(
            payment_id=payment_id, kind=kind, msisdn="962791234567", language="en", text="Paid 1.000 JOD",
            state=state, attempts=attempts, next_attempt_at=NOW, created_at=NOW, updated_at=NOW))

    def reversal(self, transaction_id, state, *, amount=1000, orig_stan="000001"):
        self.conn.execute(insert(reversals).values(
            transaction_id=transaction_id, orig_mti="0200", orig_acquirer_id="12345",
            orig_terminal_id="ATM00001", orig_stan=orig_stan, orig_transmission_dt="1122103000",
            stan=f"{next(self._reversal_stan):06d}", transmission_dt="1122103500", amount=amount,
            currency="400", state=state, repeat_count=0, created_at=NOW, updated_at=NOW))

    def outbox(self, transaction_id, action, state, *, attempts=0, last_error=None):
        self.conn.execute(insert(biller_outbox).values(
            transaction_id=transaction_id, action=action, state=state, attempts=attempts,
            next_attempt_at=NOW, expires_at=NOW, last_error=last_error, created_at=NOW, updated_at=NOW))

    def post(self, payment_id, amount=1000, *, biller="TEL", reverse=False):
        self.postings.setdefault(biller, []).append((payment_id, amount))
        if reverse:
            self.reversed.setdefault(biller, []).append(payment_id)

    def write_ledgers(self, directory, billers=("TEL",)):
        """One simulator ledger file per biller, written through the
        simulator's own ledger functions (so the audit reads what a real
        biller simulator would have recorded)."""
        paths = {}
        for biller in billers:
            path = directory / f"{biller}-ledger.sqlite"
            connection = sqlite3.connect(path)
            try:
                cursor = connection.cursor()
                ledger_create(cursor)
                for payment_id, amount in self.postings.get(biller, []):
                    ledger_post_payment(cursor, PostPaymentRequest(
                        payment_id, SUBSCRIBER, BILL, amount, "400", "2026-11-22T10:30:00Z", "ATM"),
                        "2026-11-22T10:30:01Z")
                for payment_id in self.reversed.get(biller, []):
                    ledger_reverse_payment(cursor, payment_id, "allowed", "2026-11-22T10:31:00Z")
                connection.commit()
            finally:
                connection.close()
            paths[biller] = path
        return paths


@pytest.fixture
def config(tmp_path, db_url):
    path = tmp_path / "billgw.toml"
    path.write_text(CONFIG.format(url=db_url))
    return path


def run(config, *args, capsys):
    """``billgw --config FILE audit ...``: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "audit", *args])
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), captured.out, captured.err


def audit_json(engine, config, tmp_path, capsys, build, billers=("TEL",)):
    with engine.begin() as conn:
        world = World(conn)
        build(world)
    paths = world.write_ledgers(tmp_path, billers)
    args = [f"--ledger={b}={p}" for b, p in paths.items()]
    code, out, err = run(config, *args, "--json", capsys=capsys)
    assert err == ""
    assert FULL_PAN not in out
    return code, json.loads(out)


def found(report):
    return Counter((f["category"], f["payment_id"]) for f in report["findings"])


# --- one scenario per category ------------------------------------------------

def confirmed_and_receipted(w, pid, **kwargs):
    w.txn(pid, "CONFIRMED", **kwargs)
    w.sms(pid, "SENT")
    w.post(pid, kwargs.get("amount", 1000))


def posted_twice(w):
    w.txn("p1", "CONFIRMED", msisdn=None)
    w.post("p1", biller="TEL")
    w.post("p1", biller="TEL2")


def confirmed_missing(w):
    w.txn("p1", "CONFIRMED", msisdn=None)
    w.txn("p2", "CONFIRMED", msisdn=None)
    w.post("p2", reverse=True)


def amount_mismatch(w):
    w.txn("p1", "CONFIRMED", amount=1000, msisdn=None)
    w.post("p1", 900)


def reversed_still_posted(w):
    w.txn("p1", "REVERSED", msisdn=None)
    w.txn("p2", "DECLINED", msisdn=None)
    w.txn("p3", "ANSWERED", kind="inquiry")
    for pid in ("p1", "p2", "p3"):
        w.post(pid)


def unknown_posting(w):
    w.post("ghost")
    w.txn("p2", "CONFIRMED", biller="WAT", msisdn=None)
    w.post("p2")  # at TEL, though the journal says WAT


def unresolved(w):
    for pid, state in (("p1", "RECEIVED"), ("p2", "POSTING"), ("p3", "IN_DOUBT"), ("p4", "REVERSING")):
        w.txn(pid, state, msisdn=None)
    confirmed_and_receipted(w, "p5")
    w.outbox("p5", "STATUS", "PENDING", attempts=3)


def exception(w):
    w.txn("p1", "EXCEPTION", msisdn=None)
    w.post("p1")
    w.reversal("p1", "EXCEPTION", orig_stan="000001")
    confirmed_and_receipted(w, "p2")
    w.outbox("p2", "REVERSE", "EXPIRED", attempts=12, last_error="biller timeout")


def sms_for_unconfirmed(w):
    w.txn("p1", "DECLINED")
    w.sms("p1", "QUEUED")
    w.txn("p3", "REVERSED")
    w.sms("p3", "QUEUED")  # should have been cancelled
    w.post("p3", reverse=True)
    confirmed_and_receipted(w, "p4")
    w.sms("p4", "QUEUED", kind="reversal_notice")
    w.sms("nobody", "FAILED")
    w.txn("p6", "REVERSED")  # receipt left before the reversal, notice queued: fine
    w.sms("p6", "SENT")
    w.sms("p6", "SENT", kind="reversal_notice")
    w.post("p6", reverse=True)
    w.txn("p7", "IN_DOUBT")
    w.sms("p7", "QUEUED")


def sms_missing(w):
    w.txn("p1", "CONFIRMED")
    w.post("p1")
    w.txn("p2", "REVERSED")
    w.sms("p2", "SENT")
    w.post("p2", reverse=True)
    w.txn("p3", "CONFIRMED")
    w.sms("p3", "CANCELLED")
    w.post("p3")


def sms_abandoned(w):
    w.txn("p1", "CONFIRMED")
    w.sms("p1", "ABANDONED", attempts=8)
    w.post("p1")


def reversal_missed_original(w):
    """Recorded NOT_FOUND although the original was journaled: the race of
    a 0420 with its 0200 that the key lock prevents."""
    w.txn("p1", "CONFIRMED", msisdn=None, stan="000001")
    w.post("p1")
    w.reversal(None, "NOT_FOUND", orig_stan="000001")
    w.txn("p2", "DECLINED", msisdn=None, stan="000002")
    w.reversal(None, "NOT_FOUND", orig_stan="000002")


def confirmed_after_reversal(w):
    w.txn("p1", "CONFIRMED", msisdn=None, reversal_requested=True)
    w.post("p1")
    w.txn("p2", "CONFIRMED", msisdn=None, stan="000042")
    w.post("p2")
    w.reversal("p2", "ACKED", orig_stan="000042")


def advised_declined(w):
    """The switch debited the customer; the gateway declined on its own
    rules and nobody was told: it must be an EXCEPTION, not DECLINED."""
    w.txn("p1", "DECLINED", msisdn=None, advice_received=True, local_problem="invalid_amount")
    w.txn("p2", "EXCEPTION", msisdn=None, advice_received=True, local_problem="invalid_amount")


def posted_outside_rules(w):
    w.txn("p1", "CONFIRMED", msisdn=None, local_problem="invalid_amount", amount=50)  # as journaled
    w.post("p1", 50)
    w.txn("p2", "CONFIRMED", msisdn=None, currency="978")  # the rules as configured: not the currency
    w.post("p2")
    w.txn("p3", "EXCEPTION", msisdn=None, local_problem="invalid_amount")  # refused, but the biller has it
    w.post("p3")
    w.txn("p4", "DECLINED", msisdn=None, local_problem="invalid_amount")  # declined, not held: fine


@pytest.mark.parametrize("build, billers, expected", [
    (reversal_missed_original, ("TEL",), {("reversal_missed_original", "p1"): 1,
                                          ("reversal_missed_original", "p2"): 1,
                                          ("confirmed_after_reversal", "p1"): 1}),
    (confirmed_after_reversal, ("TEL",), {("confirmed_after_reversal", "p1"): 1,
                                          ("confirmed_after_reversal", "p2"): 1}),
    (advised_declined, ("TEL",), {("advised_not_held", "p1"): 1, ("exception", "p2"): 1}),
    (posted_outside_rules, ("TEL",), {("posted_outside_rules", p): 1 for p in ("p1", "p2", "p3")}
     | {("exception", "p3"): 1}),
    (posted_twice, ("TEL", "TEL2"), {("posted_twice", "p1"): 1}),
    (confirmed_missing, ("TEL",), {("confirmed_missing_at_biller", "p1"): 1,
                                   ("confirmed_missing_at_biller", "p2"): 1}),
    (amount_mismatch, ("TEL",), {("amount_mismatch", "p1"): 1}),
    (reversed_still_posted, ("TEL",), {("reversed_still_posted", p): 1 for p in ("p1", "p2", "p3")}),
    (unknown_posting, ("TEL",), {("unknown_posting", "ghost"): 1, ("unknown_posting", "p2"): 1}),
    (unresolved, ("TEL",), {("unresolved", p): 1 for p in ("p1", "p2", "p3", "p4", "p5")}),
    # p1: the journal's EXCEPTION and the reversal's EXCEPTION are two facts.
    (exception, ("TEL",), {("exception", "p1"): 2, ("exception", "p2"): 1}),
    (sms_for_unconfirmed, ("TEL",), {("sms_for_unconfirmed", p): 1 for p in ("p1", "p3", "p4", "nobody", "p7")}
     | {("unresolved", "p7"): 1}),
    (sms_missing, ("TEL",), {("sms_missing", p): 1 for p in ("p1", "p2", "p3")}),
    (sms_abandoned, ("TEL",), {("sms_abandoned", "p1"): 1}),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_each_broken_invariant_is_found(engine, config, tmp_path, capsys, build, billers, expected):
    code, report = audit_json(engine, config, tmp_path, capsys, build, billers)
    assert found(report) == Counter(expected)
    assert code == 1
    assert report["ok"] is False
    assert report["categories"] == {c: sum(n for (cat, _), n in expected.items() if cat == c)
                                    for c in BROKEN_CATEGORIES}
    for finding in report["findings"]:
        assert finding["message"].endswith(".")


def test_pending_and_expired_biller_work_name_action_and_attempts(engine, config, tmp_path, capsys):
    def build(w):
        unresolved(w)  # p5: a STATUS query pending
        confirmed_and_receipted(w, "q2")
        w.outbox("q2", "REVERSE", "EXPIRED", attempts=12, last_error="biller timeout")

    _, report = audit_json(engine, config, tmp_path, capsys, build)
    outbox = {f["payment_id"]: f["details"] for f in report["findings"] if "action" in f["details"]}
    assert {k: outbox["p5"][k] for k in ("action", "attempts", "outbox_state")} == {
        "action": "STATUS", "attempts": 3, "outbox_state": "PENDING"}
    assert outbox["q2"]["action"] == "REVERSE" and outbox["q2"]["attempts"] == 12
    assert outbox["q2"]["last_error"] == "biller timeout"


def clean_world(w):
    confirmed_and_receipted(w, "p1")
    w.txn("p2", "DECLINED")
    w.txn("p3", "ANSWERED", kind="inquiry")
    w.txn("p4", "REVERSED")  # reversed before its receipt left
    w.sms("p4", "CANCELLED")
    w.post("p4", reverse=True)
    w.reversal("p4", "BILLER_REVERSED", orig_stan="000004")
    w.txn("p5", "REVERSED")  # reversed after its receipt left: notice queued
    w.sms("p5", "SENT")
    w.sms("p5", "QUEUED", kind="reversal_notice")
    w.post("p5", reverse=True)
    w.txn("p6", "CONFIRMED", amount=2500, msisdn=None)  # no phone number: no receipt owed
    w.post("p6", 2500)
    w.outbox("p6", "POST", "DONE", attempts=2)
    w.reversal(None, "NOT_FOUND", amount=7000, orig_stan="999999")
    w.txn("w1", "CONFIRMED", biller="WAT", amount=3000)
    w.sms("w1", "SENT")


def test_consistent_world_exits_zero_with_information(engine, config, tmp_path, capsys):
    code, report = audit_json(engine, config, tmp_path, capsys, clean_world)
    assert report["findings"] == []
    assert code == 0
    assert report["ok"] is True and report["findings"] == []
    assert set(report["categories"].values()) == {0}
    notes = {(n["category"], n["payment_id"], n["biller_code"]) for n in report["notes"]}
    assert notes == {("reversal_not_found", None, None), ("not_audited", None, "WAT")}
    assert report["billers"]["TEL"] == {
        "audited": True, "journal_confirmed_count": 2, "journal_confirmed_amount": 3500,
        "ledger_posted_count": 2, "ledger_posted_amount": 3500}
    assert report["billers"]["WAT"]["audited"] is False
    assert report["billers"]["WAT"]["journal_confirmed_amount"] == 3000
    assert report["billers"]["WAT"]["ledger_posted_amount"] is None
    assert report["counts"]["payment"] == {"CONFIRMED": 3, "DECLINED": 1, "REVERSED": 2}
    assert report["counts"]["inquiry"] == {"ANSWERED": 1}
    assert report["counts"]["reversal"] == {"BILLER_REVERSED": 1, "NOT_FOUND": 1}


def test_text_output_for_a_person(engine, config, tmp_path, capsys):
    with engine.begin() as conn:
        world = World(conn)
        clean_world(world)
        world.txn("bad", "CONFIRMED", amount=1000, msisdn=None)
    world.post("bad", 900)
    paths = world.write_ledgers(tmp_path)
    code, out, err = run(config, "--ledger", f"TEL={paths['TEL']}", capsys=capsys)
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0] == "billgw audit: BROKEN -- 1 finding(s)"
    summary = {line.split()[0]: int(line.split()[1]) for line in lines[1:1 + len(BROKEN_CATEGORIES)]}
    assert summary == {c: (1 if c == "amount_mismatch" else 0) for c in BROKEN_CATEGORIES}
    finding_lines = [line for line in lines if line.strip().startswith("amount_mismatch") and "bad" in line]
    assert len(finding_lines) == 1
    assert "is for 1000 in the journal, but TEL posted 900" in finding_lines[0]
    assert f"masked_pan={MASKED_PAN}" in finding_lines[0]
    assert any(line.strip().startswith("reversal_not_found") for line in lines)
    assert any("not_audited" in line and "WAT" in line for line in lines)
    assert any(line.strip().startswith("totals TEL:") for line in lines)
    assert FULL_PAN not in out


def test_no_card_number_reaches_the_output(engine, config, tmp_path, capsys):
    """Even when another component stored one where it should not have: a
    full PAN in the masked_pan column, or echoed in a biller's error text,
    standing apart or run into other digits."""
    def build(w):
        w.txn("p1", "CONFIRMED", masked_pan=FULL_PAN, msisdn=None)  # not posted: a finding shows it
        w.txn("p2", "CONFIRMED", msisdn=None)
        w.post("p2")
        # The second PAN runs into other digits, as in a raw frame (LL prefix, F3).
        w.outbox("p2", "REVERSE", "EXPIRED", attempts=5,
                 last_error=f"card {FULL_PAN} refused; frame 0200 16{FULL_PAN}500000")

    with engine.begin() as conn:
        world = World(conn)
        build(world)
    ledger = world.write_ledgers(tmp_path)["TEL"]
    for extra in ([], ["--json"]):
        code, out, err = run(config, f"--ledger=TEL={ledger}", *extra, capsys=capsys)
        assert code == 1
        assert FULL_PAN not in out + err
        assert MASKED_PAN in out


# --- usage and configuration errors -------------------------------------------

def test_ledger_for_a_biller_not_in_the_config_is_a_usage_error(config, tmp_path, capsys, engine):
    ledger = World(None).write_ledgers(tmp_path)["TEL"]
    code, out, err = run(config, f"--ledger=ELEC={ledger}", capsys=capsys)
    assert code == 2 and out == ""
    assert "--ledger ELEC: no biller ELEC" in err


@pytest.mark.parametrize("arg, message", [
    ("TEL", "expected CODE=PATH"),
    ("=x", "expected CODE=PATH"),
    ("TEL=/nonexistent/ledger.sqlite", "--ledger TEL: no ledger file at /nonexistent/ledger.sqlite"),
    ("WAT={ledger}", "--ledger WAT: no ledger reader for adapter kind 'water_files'"),
    ("TEL={ledger} --ledger=TEL={ledger}", "--ledger TEL: given twice"),
    ("TEL={junk}", "--ledger TEL: cannot read ledger"),
])
def test_bad_ledger_arguments_exit_2(config, tmp_path, capsys, engine, arg, message):
    ledger = World(None).write_ledgers(tmp_path)["TEL"]
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 10)
    args = [f"--ledger={a}" for a in arg.format(ledger=ledger, junk=junk).split(" --ledger=")]
    code, out, err = run(config, *args, capsys=capsys)
    assert code == 2 and out == ""
    assert message in err


def test_missing_ledger_option_is_a_usage_error(config, capsys):
    code, _, err = run(config, capsys=capsys)
    assert code == 2 and "--ledger" in err


def test_bad_configuration_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[database]\nurl = 5\n")
    code, _, err = run(bad, "--ledger=TEL=x", capsys=capsys)
    assert code == 2 and "database.url: expected str" in err


def test_missing_or_unmigrated_journal_exits_2(tmp_path, capsys):
    ledger = World(None).write_ledgers(tmp_path)["TEL"]
    missing = tmp_path / "missing.toml"
    missing.write_text(CONFIG.format(url=f"sqlite:///{tmp_path / 'nowhere' / 'journal.sqlite'}"))
    code, _, err = run(missing, f"--ledger=TEL={ledger}", capsys=capsys)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "nowhere").exists()  # the audit never creates a journal
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    unmigrated = tmp_path / "unmigrated.toml"
    unmigrated.write_text(CONFIG.format(url=f"sqlite:///{empty}"))
    code, _, err = run(unmigrated, f"--ledger=TEL={ledger}", capsys=capsys)
    assert code == 2 and "cannot read the journal" in err and "billgw db upgrade" in err


# --- the pure core: what the database constraints make impossible to store ----

def test_duplicate_acquirer_keys_and_double_postings_are_posted_twice():
    a = JournalRow("a", "payment", "CONFIRMED", 1000, "TEL", acquirer_id="1", terminal_id="T", stan="1",
                   transmission_dt="1122103000")
    b = JournalRow("b", "payment", "DECLINED", 1000, "TEL", acquirer_id="1", terminal_id="T", stan="1",
                   transmission_dt="1122103000")
    ledger = [Posting("a", SUBSCRIBER, BILL, 1000, "TR1", False, "t"),
              Posting("a", SUBSCRIBER, BILL, 1000, "TR2", False, "t")]
    report = audit([a, b], {"TEL": ledger}, [], [], [])
    assert Counter((f.category, f.payment_id) for f in report.findings) == {
        ("posted_twice", "b"): 1, ("posted_twice", "a"): 1}
    assert report.exit_status == 1
    keys = next(f for f in report.findings if f.payment_id == "b")
    assert keys.details["same_keys_as"] == "a"


def test_reversed_duplicate_posting_is_not_posted_twice():
    """A posting reversed at the biller and a live one under the same id at
    the same biller leave one live posting: the invariant holds."""
    row = JournalRow("a", "payment", "CONFIRMED", 1000, "TEL")
    ledger = [Posting("a", SUBSCRIBER, BILL, 1000, "TR1", True, "t"),
              Posting("a", SUBSCRIBER, BILL, 1000, "TR2", False, "t")]
    assert audit([row], {"TEL": ledger}, [], [], []).findings == ()


def test_reader_registry_is_keyed_by_adapter_kind():
    assert set(audit_mod.LEDGER_READERS) == {"telecom_soap", "json", "electricity", "water"}


def test_core_takes_plain_rows():
    report = audit(
        [JournalRow("a", "payment", "CONFIRMED", 1000, "TEL", msisdn="9627")],
        {"TEL": [Posting("a", SUBSCRIBER, BILL, 1000, "TR1", False, "t")]},
        [SmsRow(1, "a", "receipt", "SENT")],
        [ReversalRow(1, None, "NOT_FOUND", 500, orig_terminal_id="ATM00009", orig_stan="000009")],
        [BillerOutboxRow(1, "a", "STATUS", "DONE", 1)],
    )
    assert report.exit_status == 0
    assert [n.category for n in report.notes] == ["reversal_not_found"]
    assert audit_mod.render_text(report).startswith("billgw audit: OK")


def test_advised_payment_left_undone_is_broken():
    """The switch debited the customer (0220) and never reversed; a payment
    that ends REVERSED or DECLINED anyway means money nobody holds."""
    from billgw.gateway.audit import ADVISED_NOT_HELD, JournalRow, audit

    lost = JournalRow(id="p1", kind="payment", state="REVERSED", amount=500, biller_code="TEL",
                      advice_received=True, reversal_requested=False, stan="000001")
    fine = JournalRow(id="p2", kind="payment", state="REVERSED", amount=500, biller_code="TEL",
                      advice_received=True, reversal_requested=True, stan="000002")
    report = audit([lost, fine], {"TEL": []}, [], [], [])
    assert [(f.category, f.payment_id) for f in report.findings] == [(ADVISED_NOT_HELD, "p1")]
    assert report.exit_status == 1
