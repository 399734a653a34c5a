"""``billgw sms show`` and ``billgw sms resend``: a receipt's history, an operator's resend.

Run from the command line against the journal database (blocking: no
reactor runs here).  ``show`` prints every SMS row of a payment with its
parts, the SMSC's message ids, delivery receipts, attempts and events.
``resend`` queues the receipt again for a CONFIRMED payment only -- a
receipt says "paid", so never for a payment that is not -- recording who
asked and why; the running gateway's sender picks it up at its next poll.
It is never done automatically (docs/sms.md, "Resending").
"""
from __future__ import annotations

import getpass
import json
import os
import sys
import time
from dataclasses import asdict
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from billgw.sms.receipt_history import MessageHistory, ResendRefused, history, resend

from .db import make_engine
from .schema import transactions

CONFIRMED = "CONFIRMED"


def add_sms_commands(sms_sub) -> None:
    """The ``billgw sms ...`` subcommands of this module (argparse)."""
    show = sms_sub.add_parser("show", help="a payment's SMS history: rows, parts, message ids, receipts, attempts")
    show.add_argument("payment_id")
    show.add_argument("--json", action="store_true", help="print a machine-readable object")
    again = sms_sub.add_parser("resend", help="queue a CONFIRMED payment's receipt again (an operator's act, recorded)")
    again.add_argument("payment_id")
    again.add_argument("--reason", required=True, help="why, for the record (e.g. 'subscriber called: no SMS')")
    again.add_argument("--operator", default=None, help="who asks (default: the login name)")


def mask_msisdn(msisdn: str) -> str:
    """Enough for an operator to recognise the number, not to copy it."""
    return msisdn if len(msisdn) < 7 else f"{msisdn[:5]}{'*' * (len(msisdn) - 9)}{msisdn[-4:]}"


def _engine(settings):
    url = settings.database.url
    if url.startswith("sqlite:///") and not os.path.isfile(url[len("sqlite:///"):]):
        raise ResendRefused(f"journal database {url[len('sqlite:///'):]} does not exist "
                            f"(database.url in {settings.source})")
    return make_engine(url, 1)


def _payment_state(conn, payment_id: str) -> str | None:
    return conn.execute(select(transactions.c.state).where(transactions.c.id == payment_id)).scalar_one_or_none()


def run_command(settings, args, *, out: TextIO | None = None, err: TextIO | None = None,
                now: float | None = None) -> int:
    """Exit status: 0 done, 1 refused or not found, 2 the database cannot be read."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        engine = _engine(settings)
    except ResendRefused as exc:
        print(f"billgw sms: {exc}", file=err)
        return 2
    try:
        if args.sms_command == "show":
            with engine.connect() as conn:
                state = _payment_state(conn, args.payment_id)
                rows = history(conn, args.payment_id)
            return _show(args.payment_id, state, rows, as_json=args.json, out=out, err=err)
        operator = args.operator or getpass.getuser()
        try:
            with engine.begin() as conn:
                state = _payment_state(conn, args.payment_id)
                if state is None:
                    raise ResendRefused(f"no payment {args.payment_id} in the journal")
                if state != CONFIRMED:
                    raise ResendRefused(f"payment {args.payment_id} is {state}, not {CONFIRMED}: "
                                        "a receipt says \"paid\", so it is not resent")
                outbox_id, was = resend(conn, args.payment_id, actor=operator, reason=args.reason,
                                        now=time.time() if now is None else now)
        except ResendRefused as exc:
            print(f"billgw sms resend: refused: {exc}", file=err)
            return 1
        print(f"receipt of {args.payment_id} (sms #{outbox_id}) queued again, was {was}; "
              f"recorded as asked by {operator}", file=out)
        return 0
    except SQLAlchemyError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        print(f"billgw sms: cannot use the journal at {shown} ({str(exc).splitlines()[0]}); "
              "is its schema up to date (billgw db upgrade)?", file=err)
        return 2
    finally:
        engine.dispose()


def _show(payment_id: str, state: str | None, rows: list[MessageHistory], *, as_json: bool, out, err) -> int:
    if state is None and not rows:
        print(f"billgw sms show: no payment {payment_id} in the journal", file=err)
        return 1
    if as_json:
        doc = {"payment_id": payment_id, "payment_state": state,
               "messages": [dict(asdict(r), msisdn=mask_msisdn(r.msisdn)) for r in rows]}
        print(json.dumps(doc, default=str, ensure_ascii=False, indent=2), file=out)
        return 0
    print(f"payment {payment_id}: {state or 'not in the journal'}", file=out)
    if not rows:
        print("  no SMS for this payment", file=out)
    for r in rows:
        print(f"\n{r.kind} sms #{r.id}: {r.state}", file=out)
        print(f"  to {mask_msisdn(r.msisdn)} ({r.language}), {r.parts_expected or '?'} part(s), "
              f"data_coding {r.data_coding if r.data_coding is not None else '?'}", file=out)
        print(f"  attempts {r.attempts}, resends {r.resends}; created {r.created_at}, queued {r.queued_at}, "
              f"updated {r.updated_at}", file=out)
        if r.state in ("QUEUED", "FAILED"):
            print(f"  next attempt {r.next_attempt_at}", file=out)
        if r.last_error:
            print(f"  last error: {r.last_error}", file=out)
        print(f"  text: {r.text}", file=out)
        if r.parts:
            print("  parts:", file=out)
        for p in r.parts:
            receipt = (f"{p.dlr_stat} at {p.dlr_at}" + (f" (done {p.dlr_done_at})" if p.dlr_done_at else "")
                       + (f" err {p.dlr_error}" if p.dlr_error else "")) if p.dlr_stat else "no receipt yet"
            print(f"    resend {p.resend_no} attempt {p.attempt} part {p.part_number}: id {p.message_id} "
                  f"via {p.smsc or '?'}, submitted {p.submitted_at}; {receipt}", file=out)
        if r.events:
            print("  events:", file=out)
        for e in r.events:
            print(f"    {e.at} {e.event} by {e.actor}: {e.from_state} -> {e.to_state}"
                  + (f"; {e.detail}" if e.detail else ""), file=out)
    return 0
