"""The audit's rules for the SMS receipts: the outbox against the journal.

Exactly one receipt per CONFIRMED payment with a phone number, none for
anything else; a reversal notice exactly when a REVERSED payment's receipt
may already have reached the phone; a receipt the sender left UNCERTAIN or
ABANDONED is named.  Pure, like :mod:`.rules`: rows in, findings out.
(How the SMS side is sending -- stuck queues, refused binds -- is
:mod:`.sms_health`.)
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from billgw.sms.outbox import OutboxKind, OutboxState

from ..states import State
from .details import _finding
from .rows import (
    SMS_ABANDONED,
    SMS_FOR_UNCONFIRMED,
    SMS_MISSING,
    SMS_UNCERTAIN,
    Finding,
    JournalRow,
    SmsRow,
)

# SMS rows that have gone, are going, or will go to the subscriber's phone.
_SMS_LIVE = frozenset({OutboxState.QUEUED.value, OutboxState.SENDING.value, OutboxState.SENT.value,
                       OutboxState.FAILED.value, OutboxState.UNCERTAIN.value,
                       OutboxState.DELIVERED.value, OutboxState.UNDELIVERABLE.value, OutboxState.EXPIRED.value})
# A receipt in these states may already be on the subscriber's phone
# (UNDELIVERABLE: some of its parts may be).
_SMS_MAYBE_DELIVERED = frozenset({OutboxState.SENT.value, OutboxState.SENDING.value,
                                  OutboxState.UNCERTAIN.value, OutboxState.DELIVERED.value,
                                  OutboxState.UNDELIVERABLE.value})


def _sms_findings(journal: Mapping[str, JournalRow], sms_rows: Iterable[SmsRow]) -> list[Finding]:
    """Exactly one receipt per confirmed payment, none for anything else;
    a reversal notice exactly when a reversed payment's receipt may have gone."""
    findings = []
    by_payment: dict[str, dict[str, SmsRow]] = defaultdict(dict)
    for sms in sms_rows:
        by_payment[sms.payment_id][sms.kind] = sms
    receipt_kind, notice_kind = OutboxKind.RECEIPT.value, OutboxKind.REVERSAL_NOTICE.value

    for payment_id, kinds in by_payment.items():
        row = journal.get(payment_id)
        state = row.state if row is not None else None
        if row is None:
            described = "payment the journal does not know"
        else:
            described = f"{row.kind} in state {state}"
        receipt, notice = kinds.get(receipt_kind), kinds.get(notice_kind)
        for sms in (receipt, notice):
            if sms is None:
                continue
            extra = {"sms_id": sms.id, "sms_kind": sms.kind, "sms_state": sms.state,
                     "sms_attempts": sms.attempts}
            if sms.state == OutboxState.UNCERTAIN.value:
                findings.append(_finding(
                    SMS_UNCERTAIN, row, payment_id,
                    f"The {sms.kind.replace('_', ' ')} SMS for {payment_id} was being sent when its "
                    "sender stopped; the SMSC may or may not have it, and it is not sent again.",
                    **extra))
            if sms.state == OutboxState.ABANDONED.value:
                findings.append(_finding(
                    SMS_ABANDONED, row, payment_id,
                    f"The {sms.kind.replace('_', ' ')} SMS for {payment_id} was abandoned after "
                    f"{sms.attempts} attempt(s): the subscriber was never told.", **extra))
        if receipt is not None and receipt.state in _SMS_LIVE and state != State.CONFIRMED.value:
            reversed_after_receipt = (state == State.REVERSED.value
                                      and receipt.state in _SMS_MAYBE_DELIVERED)
            # A receipt that left before the reversal is legitimate; a missing
            # reversal notice for it is reported below as sms_missing.
            if not reversed_after_receipt:
                findings.append(_finding(
                    SMS_FOR_UNCONFIRMED, row, payment_id,
                    f"A receipt SMS ({receipt.state}) exists for {payment_id} ({described}): "
                    "the subscriber may be told \"paid\" for a payment that is not.",
                    sms_id=receipt.id, sms_kind=receipt.kind, sms_state=receipt.state))
        if notice is not None and notice.state in _SMS_LIVE and state != State.REVERSED.value:
            findings.append(_finding(
                SMS_FOR_UNCONFIRMED, row, payment_id,
                f"A reversal notice SMS ({notice.state}) exists for {payment_id} ({described}).",
                sms_id=notice.id, sms_kind=notice.kind, sms_state=notice.state))

    for row in journal.values():
        if row.kind != "payment":
            continue
        kinds = by_payment.get(row.id, {})
        receipt, notice = kinds.get(receipt_kind), kinds.get(notice_kind)
        if row.state == State.CONFIRMED.value and row.msisdn:
            if receipt is None:
                findings.append(_finding(
                    SMS_MISSING, row, row.id,
                    f"Payment {row.id} is CONFIRMED with a phone number for its receipt, but no "
                    "receipt SMS was ever queued."))
            elif receipt.state == OutboxState.CANCELLED.value:
                findings.append(_finding(
                    SMS_MISSING, row, row.id,
                    f"Payment {row.id} is CONFIRMED, but its receipt SMS was cancelled.",
                    sms_id=receipt.id, sms_kind=receipt.kind, sms_state=receipt.state))
        if (row.state == State.REVERSED.value and receipt is not None
                and receipt.state in _SMS_MAYBE_DELIVERED and notice is None):
            findings.append(_finding(
                SMS_MISSING, row, row.id,
                f"Payment {row.id} was REVERSED after its receipt SMS went out ({receipt.state}), "
                "but no reversal notice was queued: the subscriber still believes it paid.",
                sms_id=receipt.id, sms_kind=receipt.kind, sms_state=receipt.state))
    return findings
