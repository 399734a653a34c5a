"""``billgw journal find --pan``: an operator finds a card's payments.

The journal keeps no card number, only the masked PAN and its keyed hash
(HMAC-SHA-256 under ``BILLGW_PAN_HMAC_KEY``, gateway/keys.py).  The card
number the operator gives is hashed here, with the same key, and only the
hash is used in the query; it is neither stored nor logged nor printed.
Asked for without a value, the card number is read from the terminal
without echo, so it stays out of the shell's history too.

Rows journaled while the gateway ran without the key have no hash and
cannot be found this way (the gateway logs at start-up that it keeps none).
Everything printed has terminal control characters escaped.
"""
from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Sequence, TextIO

from sqlalchemy import select
from sqlalchemy.engine import Engine

from billgw.iso8583.masking import PanHasher, escape_control

from .schema import transactions

MAX_ROWS = 200  # one card's payments; more is not a look-up


class FindUsageError(ValueError):
    """The card number or the key is unusable (exit status 2)."""


@dataclass(frozen=True)
class FoundPayment:
    id: str
    created_at: str
    kind: str
    mti: str
    state: str
    masked_pan: str | None
    amount: int
    currency: str
    biller_code: str | None
    acquirer_id: str
    terminal_id: str
    stan: str
    rrn: str
    response_code: str | None


def card_digits(text: str) -> str:
    """The digits of a card number as an operator types it (spaces and
    dashes allowed); FindUsageError unless 12 to 19 digits."""
    digits = "".join(ch for ch in text if ch not in " -")
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        raise FindUsageError("a card number is 12 to 19 digits (spaces and dashes allowed)")
    return digits


def find_by_pan(engine: Engine, hasher: PanHasher, pan: str, limit: int = MAX_ROWS) -> list[FoundPayment]:
    """The journal's rows for this card, newest first (at most ``limit``)."""
    t = transactions
    query = (select(t.c.id, t.c.created_at, t.c.kind, t.c.mti, t.c.state, t.c.masked_pan, t.c.amount,
                    t.c.currency, t.c.biller_code, t.c.acquirer_id, t.c.terminal_id, t.c.stan, t.c.rrn,
                    t.c.response_code)
             .where(t.c.pan_hash == hasher(card_digits(pan)))
             .order_by(t.c.created_at.desc(), t.c.id).limit(limit))
    with engine.connect() as conn:
        return [FoundPayment(**{**row._mapping, "created_at": str(row.created_at)}) for row in conn.execute(query)]


def render(rows: Sequence[FoundPayment], out: TextIO) -> None:
    if not rows:
        out.write("no payment of this card in the journal (rows journaled without BILLGW_PAN_HMAC_KEY "
                  "cannot be found by card)\n")
        return
    for r in rows:
        line = (f"{r.created_at}  {r.id}  {r.kind} {r.mti} {r.state}  {r.masked_pan or '-'}  "
                f"{r.amount} ({r.currency})  biller {r.biller_code or '-'}  acquirer {r.acquirer_id} "
                f"terminal {r.terminal_id} stan {r.stan} rrn {r.rrn}  F39 {r.response_code or '-'}")
        out.write(escape_control(line) + "\n")
    if len(rows) >= MAX_ROWS:
        out.write(f"(the newest {MAX_ROWS} shown)\n")


def read_pan(value: str | None, prompt=getpass.getpass) -> str:
    """The card number from the command line, or typed without echo."""
    return value if value else prompt("card number (not echoed): ")
