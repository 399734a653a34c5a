"""The SMS outbox's tables and the states of a row, as data.

``sms_outbox`` holds one row per message to send (a receipt or a reversal
notice per payment, unique by the database); ``sms_outbox_parts`` one row
per part the SMSC accepted, with its delivery receipt;
``sms_outbox_events`` what happened to a row beyond its columns (an
operator's resend, a local expiry).  The row operations are
:mod:`billgw.sms.outbox`'s, where every name here is importable too; the
gateway's schema and migrations take ``metadata`` from there.
"""
from __future__ import annotations

import datetime as _dt
import enum

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UnicodeText,
    UniqueConstraint,
)

metadata = MetaData()


class OutboxState(enum.Enum):
    WAITING = "WAITING"  # payment not yet confirmed by a batch-posting biller
    QUEUED = "QUEUED"  # due for sending
    SENDING = "SENDING"  # claimed by a sender under a lease
    SENT = "SENT"  # accepted by the SMSC (message ids recorded)
    FAILED = "FAILED"  # last attempt failed; retried at next_attempt_at
    ABANDONED = "ABANDONED"  # gave up; a person looks at it
    CANCELLED = "CANCELLED"  # the payment was reversed before its SMS left
    UNCERTAIN = "UNCERTAIN"  # its sender died mid-submit: maybe sent; never resent
    # Final states from the SMSC's delivery receipts (billgw.sms.dlr.combine),
    # and EXPIRED also for a receipt never submitted within ``expire_after``.
    DELIVERED = "DELIVERED"
    UNDELIVERABLE = "UNDELIVERABLE"
    EXPIRED = "EXPIRED"


class OutboxKind(enum.Enum):
    RECEIPT = "receipt"
    REVERSAL_NOTICE = "reversal_notice"


sms_outbox = Table(
    "sms_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(40), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("msisdn", String(20), nullable=False),
    Column("language", String(5), nullable=False),
    Column("text", UnicodeText, nullable=False),
    Column("state", String(13), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("lease_until", DateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    # The SMSC's message ids are in sms_outbox_parts, one row per part.
    Column("data_coding", Integer, nullable=True),
    Column("parts", Integer, nullable=True),
    Column("last_error", String(400), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # When the row last became due (created, or resent by an operator): the
    # local expiry counts from here.
    Column("queued_at", DateTime, nullable=False,
           default=lambda ctx: ctx.get_current_parameters().get("created_at")),
    # Exactly one receipt (and one reversal notice) per payment, enforced by
    # the database rather than by process memory.
    UniqueConstraint("payment_id", "kind", name="uq_sms_outbox_payment_kind"),
    # How many times an operator asked for this message again (billgw sms
    # resend); each resend starts a fresh attempt budget.
    Column("resends", Integer, nullable=False, default=0),
)

# One row per part the SMSC accepted: the id its submit_sm_resp gave, when,
# and what its delivery receipt said.  ``message_key`` is the id in the form
# receipts are matched in (billgw.sms.dlr.message_key).
sms_outbox_parts = Table(
    "sms_outbox_parts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outbox_id", Integer, ForeignKey("sms_outbox.id"), nullable=False),
    Column("resend_no", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("part_number", Integer, nullable=False),
    Column("smsc", String(40), nullable=True),
    Column("message_id", String(65), nullable=False),
    Column("message_key", String(65), nullable=False),
    Column("submitted_at", DateTime, nullable=False),
    Column("dlr_stat", String(8), nullable=True),
    Column("dlr_error", String(10), nullable=True),
    Column("dlr_done_at", DateTime, nullable=True),  # the SMSC's "done date"
    Column("dlr_at", DateTime, nullable=True),  # when the receipt reached us
    UniqueConstraint("outbox_id", "resend_no", "attempt", "part_number", name="uq_sms_outbox_parts_part"),
)
Index("ix_sms_outbox_parts_key", sms_outbox_parts.c.message_key)
Index("ix_sms_outbox_parts_outbox", sms_outbox_parts.c.outbox_id)

# What happened to a receipt that is not in its row's columns: an operator's
# resend (who, why), a local expiry.
sms_outbox_events = Table(
    "sms_outbox_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outbox_id", Integer, ForeignKey("sms_outbox.id"), nullable=False, index=True),
    Column("at", DateTime, nullable=False),
    Column("event", String(20), nullable=False),
    Column("from_state", String(13), nullable=True),
    Column("to_state", String(13), nullable=True),
    Column("actor", String(64), nullable=False),
    Column("detail", String(400), nullable=True),
)


def utc(seconds: float) -> _dt.datetime:
    """A naive UTC datetime from a clock reading (``IReactorTime.seconds()``)."""
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).replace(tzinfo=None)
