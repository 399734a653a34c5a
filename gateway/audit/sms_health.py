"""The audit's SMS-side rules: receipts stuck in the queue, a refused bind.

The outbox rules of :mod:`.rules` judge each receipt against its payment
(one per confirmed payment, none for others, ABANDONED and UNCERTAIN named).
These judge the sending itself, from the outbox rows' age and the links'
health rows (``sms_link_health``, written by each gateway process,
:mod:`billgw.sms.health`):

* ``sms_stuck`` (broken): a receipt QUEUED or FAILED (waiting for a retry)
  longer than ``[sms] queued_alert_after`` -- the subscriber is waiting;
* ``sms_bind_refused`` (broken): a bind the SMSC refused for its credentials;
  the link stopped trying (no reconnect storm), so nothing goes out until
  the credentials are fixed and the gateway restarted;
* ``sms_link_not_bound`` (note): a bind DOWN or CONNECTING, or whose row was
  last written longer ago than ``stale_after`` (its process may be gone);
* ``sms_invalid_msisdn`` (note): payments that went on without a receipt
  because their MSISDN was invalid (gateway/msisdn_policy.py).

:func:`sms_health_findings` is pure (rows and ``now`` in);
:func:`load_sms_health` is the thin blocking read, in one transaction.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import and_, func, select

from billgw.sms.health import LinkHealthRow, read_health
from billgw.sms.outbox import OutboxState, sms_outbox, utc

from ..msisdn_policy import INVALID_MARK
from ..schema import transactions
from .rows import SMS_BIND_REFUSED, SMS_INVALID_MSISDN, SMS_LINK_NOT_BOUND, SMS_STUCK, AuditReport, Finding

_WAITING = (OutboxState.QUEUED.value, OutboxState.FAILED.value)
HEALTH_STALE_AFTER = 300.0  # a live gateway rewrites its row every minute at least


@dataclass(frozen=True)
class WaitingReceipt:
    id: int
    payment_id: str
    kind: str
    state: str
    attempts: int
    created_at: _dt.datetime
    last_error: str | None = None


@dataclass(frozen=True)
class SmsHealthSnapshot:
    waiting: tuple[WaitingReceipt, ...]  # QUEUED/FAILED rows older than the limit
    links: tuple[LinkHealthRow, ...]
    paid_without_receipt: int  # CONFIRMED payments whose MSISDN was invalid


def load_sms_health(engine, *, now: float, queued_alert_after: float) -> SmsHealthSnapshot:
    s, t = sms_outbox, transactions
    cutoff = utc(now - queued_alert_after)
    with engine.connect() as conn, conn.begin():
        waiting = tuple(
            WaitingReceipt(r.id, r.payment_id, r.kind, r.state, r.attempts, r.created_at, r.last_error)
            for r in conn.execute(select(s.c.id, s.c.payment_id, s.c.kind, s.c.state, s.c.attempts, s.c.created_at,
                                         s.c.last_error)
                                  .where(and_(s.c.state.in_(_WAITING), s.c.created_at < cutoff))
                                  .order_by(s.c.created_at).limit(1000)))
        links = tuple(read_health(conn))
        invalid = conn.execute(select(func.count()).select_from(t).where(
            and_(t.c.state == "CONFIRMED", t.c.msisdn == INVALID_MARK))).scalar_one()
    return SmsHealthSnapshot(waiting, links, invalid)


def _age(at: _dt.datetime, now: float) -> int:
    return int(now - at.replace(tzinfo=_dt.timezone.utc).timestamp())


def sms_health_findings(snapshot: SmsHealthSnapshot, *, now: float, queued_alert_after: float,
                        stale_after: float = HEALTH_STALE_AFTER) -> tuple[list[Finding], list[Finding]]:
    """``(findings, notes)``; pure."""
    findings, notes = [], []
    for r in snapshot.waiting:
        age = _age(r.created_at, now)
        if age <= queued_alert_after:
            continue
        findings.append(Finding(
            SMS_STUCK, r.payment_id,
            f"The {r.kind.replace('_', ' ')} SMS for {r.payment_id} has waited {age} s ({r.state}, "
            f"{r.attempts} attempt(s)), longer than the {int(queued_alert_after)} s allowed: "
            "the subscriber has not been told.",
            details={"sms_id": r.id, "sms_state": r.state, "sms_attempts": r.attempts, "age_seconds": age,
                     "last_error": (r.last_error or "")[:120]}))
    for link in snapshot.links:
        age = _age(link.updated_at, now)
        details = {"link": link.link, "state": link.state, "last_bind_status": link.last_bind_status,
                   "owner": link.owner, "updated_seconds_ago": age}
        if link.state == "REFUSED":
            status = f"0x{link.last_bind_status:08X}" if link.last_bind_status is not None else "?"
            findings.append(Finding(
                SMS_BIND_REFUSED, None,
                f"The SMSC refused the bind {link.link} for its credentials (status {status}); the "
                "sender stopped trying, so no receipt goes out until they are fixed and the gateway restarted.",
                details=details))
        elif link.state in ("DOWN", "CONNECTING") or (link.state != "STOPPED" and age > stale_after):
            notes.append(Finding(
                SMS_LINK_NOT_BOUND, None,
                f"The bind {link.link} is {link.state}"
                + (f", last reported {age} s ago (is its gateway running?)" if age > stale_after else "")
                + ": receipts wait in the queue.", details=details))
    if snapshot.paid_without_receipt:
        notes.append(Finding(
            SMS_INVALID_MSISDN, None,
            f"{snapshot.paid_without_receipt} confirmed payment(s) went on without a receipt: their "
            "MSISDN was invalid ([sms] invalid_msisdn = \"pay_without_sms\").",
            details={"payments": snapshot.paid_without_receipt}))
    return findings, notes


def extend_report(report: AuditReport, findings: Sequence[Finding], notes: Sequence[Finding]) -> AuditReport:
    return dataclasses.replace(report, findings=tuple(report.findings) + tuple(findings),
                               notes=tuple(report.notes) + tuple(notes))
