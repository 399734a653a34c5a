"""Reversals, advices and the store-and-forward outbox towards billers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("reversal_requested", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("advice_received", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("advice_response", sa.Text, nullable=True))
    op.create_table(
        "reversals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("transactions.id"), nullable=True),
        sa.Column("orig_mti", sa.String(4), nullable=False),
        sa.Column("orig_acquirer_id", sa.String(11), nullable=False),
        sa.Column("orig_terminal_id", sa.String(8), nullable=False),
        sa.Column("orig_stan", sa.String(6), nullable=False),
        sa.Column("orig_transmission_dt", sa.String(10), nullable=False),
        sa.Column("stan", sa.String(6), nullable=False),
        sa.Column("transmission_dt", sa.String(10), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("repeat_count", sa.Integer, nullable=False),
        sa.Column("response_fields", sa.Text, nullable=True),
        sa.Column("detail", sa.String(400), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("orig_acquirer_id", "orig_terminal_id", "orig_stan", "orig_transmission_dt",
                            name="uq_reversals_original_keys"),
    )
    op.create_index("ix_reversals_transaction_id", "reversals", ["transaction_id"])
    op.create_table(
        "biller_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("transactions.id"), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.String(400), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("transaction_id", "action", name="uq_biller_outbox_transaction_action"),
    )
    op.create_index("ix_biller_outbox_due", "biller_outbox", ["state", "next_attempt_at"])


def downgrade():
    op.drop_table("biller_outbox")
    op.drop_table("reversals")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("advice_response")
        batch.drop_column("advice_received")
        batch.drop_column("reversal_requested")
