"""``billgw sms show`` / ``billgw sms resend`` on every database: the whole
history of a receipt, and a resend that only a person starts, only for a
CONFIRMED payment, recorded with who and why -- and one run of the installed
command to prove the wiring."""
import argparse
import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from billgw.gateway.config import load_settings
from billgw.gateway.schema import transactions
from billgw.gateway.sms_ops import mask_msisdn, run_command
from billgw.sms import outbox
from billgw.sms.deliveries import IncomingReceipt, record_deliveries
from billgw.sms.dlr import DeliveryReceipt
from billgw.sms.outbox import Outcome, OutboxKind, OutboxState, sms_outbox, sms_outbox_events

T0 = 1_700_000_000.0
MSISDN = "962791234567"


def payment(engine, payment_id, state="CONFIRMED", stan="000001"):
    at = outbox.utc(T0)
    with engine.begin() as conn:
        conn.execute(transactions.insert().values(
            id=payment_id, kind="payment", mti="0200", processing_code="500000", acquirer_id="123456",
            terminal_id="ATM00001", stan=stan, transmission_dt="1206041500", rrn="000000000001",
            fingerprint="f" * 64, amount=12500, currency="400", fee=0, state=state, created_at=at, updated_at=at))


def receipt(engine, payment_id, ids=("A1", "A2"), stat=None):
    with engine.begin() as conn:
        row_id = outbox.enqueue(conn, payment_id=payment_id, kind=OutboxKind.RECEIPT, msisdn=MSISDN,
                                language="en", text="Paid 12.500 JOD, card ****0010", now=T0)
        [item] = [i for i in outbox.claim_for_submit(conn, now=T0, owner="gw", lease_seconds=60, limit=10)
                  if i.id == row_id]
        if ids:
            outbox.record_outcomes(conn, [Outcome(row_id, OutboxState.SENT, ids, 0, len(ids), smsc="default",
                                                  part_times=(T0, T0 + 1), attempt=item.attempts)],
                                   owner="gw", now=T0 + 1)
        if stat:
            record_deliveries(conn, [IncomingReceipt("default", DeliveryReceipt(i, stat, "000"), T0 + 60)
                                     for i in ids])
    return row_id


@pytest.fixture
def settings(engine, db_url):
    base = load_settings(environ={})
    return dataclasses.replace(base, database=dataclasses.replace(base.database, url=db_url))


def run(settings, *argv, now=T0 + 3600):
    parser = argparse.ArgumentParser()
    from billgw.gateway.sms_ops import add_sms_commands

    add_sms_commands(parser.add_subparsers(dest="sms_command", required=True))
    out, err = io.StringIO(), io.StringIO()
    code = run_command(settings, parser.parse_args(argv), out=out, err=err, now=now)
    return code, out.getvalue(), err.getvalue()


def row(engine, row_id):
    with engine.connect() as conn:
        return conn.execute(select(sms_outbox).where(sms_outbox.c.id == row_id)).one()


def test_show_prints_the_parts_ids_receipts_and_attempts(engine, settings):
    payment(engine, "PAY-1")
    receipt(engine, "PAY-1", stat="DELIVRD")
    code, out, err = run(settings, "show", "PAY-1")
    assert (code, err) == (0, "")
    assert "payment PAY-1: CONFIRMED" in out and "receipt sms #1: DELIVERED" in out
    assert "part 1: id A1 via default" in out and "part 2: id A2 via default" in out
    assert out.count("DELIVRD at") == 2 and "attempts 1, resends 0" in out
    assert MSISDN not in out and "96279***4567" in out


def test_show_json_and_an_unknown_payment(engine, settings):
    payment(engine, "PAY-1")
    receipt(engine, "PAY-1")
    code, out, _ = run(settings, "show", "PAY-1", "--json")
    import json

    doc = json.loads(out)
    [message] = doc["messages"]
    assert (doc["payment_state"], message["state"], [p["message_id"] for p in message["parts"]]) == (
        "CONFIRMED", "SENT", ["A1", "A2"])
    assert run(settings, "show", "NOPE")[0] == 1


def test_resend_queues_the_receipt_again_and_records_who_and_why(engine, settings):
    payment(engine, "PAY-1")
    row_id = receipt(engine, "PAY-1", stat="UNDELIV")
    code, out, err = run(settings, "resend", "PAY-1", "--reason", "subscriber called: no SMS", "--operator", "rana")
    assert code == 0, err
    assert "queued again, was UNDELIVERABLE" in out
    r = row(engine, row_id)
    assert (r.state, r.attempts, r.resends, r.next_attempt_at, r.queued_at) == (
        "QUEUED", 0, 1, outbox.utc(T0 + 3600), outbox.utc(T0 + 3600))
    with engine.connect() as conn:
        [event] = conn.execute(select(sms_outbox_events)).all()
    assert (event.event, event.actor, event.from_state, event.to_state) == ("RESEND", "rana", "UNDELIVERABLE", "QUEUED")
    assert event.detail.startswith("subscriber called: no SMS")
    # The next submission's parts are told apart from the first's; show has both and the event.
    with engine.begin() as conn:
        [item] = outbox.claim_for_submit(conn, now=T0 + 3600, owner="gw", lease_seconds=60, limit=1)
        outbox.record_outcomes(conn, [Outcome(row_id, OutboxState.SENT, ("B1",), 0, 1, smsc="default",
                                              attempt=item.attempts, resends=item.resends)], owner="gw",
                               now=T0 + 3601)
        assert outbox.message_ids(conn, row_id) == ["B1"]
    _, out, _ = run(settings, "show", "PAY-1")
    assert "resend 1 attempt 1 part 1: id B1" in out and "resend 0 attempt 1 part 1: id A1" in out
    assert "RESEND by rana: UNDELIVERABLE -> QUEUED" in out


@pytest.mark.parametrize("state", ["REVERSED", "DECLINED", "IN_DOUBT", "POSTING"])
def test_resend_is_refused_for_a_payment_that_is_not_confirmed(engine, settings, state):
    payment(engine, "PAY-1", state=state)
    row_id = receipt(engine, "PAY-1")
    code, _, err = run(settings, "resend", "PAY-1", "--reason", "x", "--operator", "rana")
    assert code == 1 and f"is {state}, not CONFIRMED" in err
    assert (row(engine, row_id).state, row(engine, row_id).resends) == ("SENT", 0)


def test_resend_is_refused_while_the_receipt_is_being_sent_or_already_queued(engine, settings):
    payment(engine, "PAY-1")
    receipt(engine, "PAY-1", ids=())  # claimed: SENDING
    code, _, err = run(settings, "resend", "PAY-1", "--reason", "x", "--operator", "rana")
    assert code == 1 and "SENDING" in err and "being sent right now" in err
    payment(engine, "PAY-2", stan="000002")
    with engine.begin() as conn:
        outbox.enqueue(conn, payment_id="PAY-2", kind=OutboxKind.RECEIPT, msisdn=MSISDN, language="en",
                       text="Paid", now=T0)
    code, _, err = run(settings, "resend", "PAY-2", "--reason", "x", "--operator", "rana")
    assert code == 1 and "already queued" in err


def test_resend_of_a_payment_without_a_receipt_or_unknown_is_refused(engine, settings):
    payment(engine, "PAY-1")
    assert "has no receipt SMS" in run(settings, "resend", "PAY-1", "--reason", "x", "--operator", "r")[2]
    assert "no payment NOPE" in run(settings, "resend", "NOPE", "--reason", "x", "--operator", "r")[2]


def test_msisdns_are_masked_in_the_middle():
    assert mask_msisdn("962791234567") == "96279***4567"


def test_the_installed_command_runs_show_and_resend(tmp_path, engine, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("one run of the installed command is enough")
    payment(engine, "PAY-9")
    receipt(engine, "PAY-9")
    from importlib import resources

    text = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
    cfg = tmp_path / "billgw.toml"
    cfg.write_text(text.replace('url = "sqlite:///var/billgw.sqlite"', f'url = "{db_url}"'), encoding="utf-8")
    billgw = str(Path(sys.executable).with_name("billgw"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLGW_")}
    shown = subprocess.run([billgw, "--config", str(cfg), "sms", "show", "PAY-9"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "receipt sms #1: SENT" in shown.stdout, shown.stderr
    again = subprocess.run([billgw, "--config", str(cfg), "sms", "resend", "PAY-9", "--reason", "asked",
                            "--operator", "ops"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "queued again, was SENT" in again.stdout, again.stderr
    missing = subprocess.run([billgw, "--config", str(cfg), "sms", "resend", "PAY-9"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--reason" in missing.stderr  # the reason is required
