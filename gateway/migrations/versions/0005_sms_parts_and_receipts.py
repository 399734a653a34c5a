"""SMS delivery: one row per accepted part (message id, times, receipt), events, expiry.

The comma-joined ``sms_outbox.smsc_message_ids`` could not hold a part's
submit time or its delivery receipt, nor be searched by message id when a
receipt arrives: its ids move to ``sms_outbox_parts`` (one row per part, in
their order) and the column goes.  ``queued_at`` is when a row last became
due (the local expiry counts from it), ``resends`` counts an operator's
resends; ``sms_outbox_events`` records those resends and expiries.  The
state column widens for UNDELIVERABLE.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sms_outbox_parts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.Integer, sa.ForeignKey("sms_outbox.id"), nullable=False),
        sa.Column("resend_no", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("part_number", sa.Integer, nullable=False),
        sa.Column("smsc", sa.String(40), nullable=True),
        sa.Column("message_id", sa.String(65), nullable=False),
        sa.Column("message_key", sa.String(65), nullable=False),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("dlr_stat", sa.String(8), nullable=True),
        sa.Column("dlr_error", sa.String(10), nullable=True),
        sa.Column("dlr_done_at", sa.DateTime, nullable=True),
        sa.Column("dlr_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("outbox_id", "resend_no", "attempt", "part_number",
                            name="uq_sms_outbox_parts_part"),
    )
    op.create_index("ix_sms_outbox_parts_key", "sms_outbox_parts", ["message_key"])
    op.create_index("ix_sms_outbox_parts_outbox", "sms_outbox_parts", ["outbox_id"])
    op.create_table(
        "sms_outbox_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.Integer, sa.ForeignKey("sms_outbox.id"), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("from_state", sa.String(13), nullable=True),
        sa.Column("to_state", sa.String(13), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(400), nullable=True),
    )
    op.create_index("ix_sms_outbox_events_outbox_id", "sms_outbox_events", ["outbox_id"])

    with op.batch_alter_table("sms_outbox") as batch:
        batch.add_column(sa.Column("queued_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("resends", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("state", type_=sa.String(13), existing_type=sa.String(12), existing_nullable=False)

    conn = op.get_bind()
    outbox = sa.table("sms_outbox", sa.column("id", sa.Integer), sa.column("created_at", sa.DateTime),
                      sa.column("updated_at", sa.DateTime), sa.column("attempts", sa.Integer),
                      sa.column("queued_at", sa.DateTime), sa.column("smsc_message_ids", sa.String))
    conn.execute(outbox.update().values(queued_at=outbox.c.created_at))
    parts = []
    for row in conn.execute(sa.select(outbox.c.id, outbox.c.attempts, outbox.c.updated_at,
                                      outbox.c.smsc_message_ids)
                            .where(outbox.c.smsc_message_ids.isnot(None))):
        for number, message_id in enumerate((m for m in row.smsc_message_ids.split(",") if m), start=1):
            key = message_id.strip().lower().lstrip("0") or "0"
            parts.append(dict(outbox_id=row.id, resend_no=0, attempt=row.attempts, part_number=number,
                              smsc=None, message_id=message_id, message_key=key, submitted_at=row.updated_at))
    if parts:
        parts_table = sa.table("sms_outbox_parts", *(sa.column(k) for k in parts[0]))
        conn.execute(parts_table.insert(), parts)

    with op.batch_alter_table("sms_outbox") as batch:
        batch.alter_column("queued_at", existing_type=sa.DateTime, nullable=False)
        batch.drop_column("smsc_message_ids")


def downgrade():
    with op.batch_alter_table("sms_outbox") as batch:
        batch.add_column(sa.Column("smsc_message_ids", sa.String(400), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT outbox_id, message_id FROM sms_outbox_parts ORDER BY outbox_id, resend_no, attempt, part_number"
    )).all()
    joined = {}
    for outbox_id, message_id in rows:
        joined.setdefault(outbox_id, []).append(message_id)
    for outbox_id, ids in joined.items():
        conn.execute(sa.text("UPDATE sms_outbox SET smsc_message_ids = :ids WHERE id = :id"),
                     {"ids": ",".join(ids)[:400], "id": outbox_id})
    with op.batch_alter_table("sms_outbox") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("resends")
        batch.alter_column("state", type_=sa.String(12), existing_type=sa.String(13), existing_nullable=False)
    op.drop_table("sms_outbox_events")
    op.drop_table("sms_outbox_parts")
