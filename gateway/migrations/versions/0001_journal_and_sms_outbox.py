"""Journal of transactions, their state history, and the SMS outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "transactions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("mti", sa.String(4), nullable=False),
        sa.Column("processing_code", sa.String(6), nullable=False),
        sa.Column("acquirer_id", sa.String(11), nullable=False),
        sa.Column("forwarder_id", sa.String(11), nullable=True),
        sa.Column("terminal_id", sa.String(8), nullable=False),
        sa.Column("stan", sa.String(6), nullable=False),
        sa.Column("transmission_dt", sa.String(10), nullable=False),
        sa.Column("rrn", sa.String(12), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("masked_pan", sa.String(19), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("fee", sa.BigInteger, nullable=False),
        sa.Column("biller_code", sa.String(10), nullable=True),
        sa.Column("service_code", sa.String(10), nullable=True),
        sa.Column("billing_number", sa.String(30), nullable=True),
        sa.Column("bill_number", sa.String(30), nullable=True),
        sa.Column("msisdn", sa.String(15), nullable=True),
        sa.Column("language", sa.String(5), nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("response_code", sa.String(2), nullable=True),
        sa.Column("response_fields", sa.Text, nullable=True),
        sa.Column("auth_code", sa.String(6), nullable=True),
        sa.Column("biller_receipt", sa.String(40), nullable=True),
        sa.Column("settlement_date", sa.String(8), nullable=True),
        sa.Column("detail", sa.String(400), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("acquirer_id", "terminal_id", "stan", "transmission_dt",
                            name="uq_transactions_acquirer_keys"),
    )
    op.create_index("ix_transactions_state", "transactions", ["state"])
    op.create_index("ix_transactions_rrn", "transactions", ["rrn"])
    op.create_table(
        "transaction_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(32), sa.ForeignKey("transactions.id"), nullable=False),
        sa.Column("from_state", sa.String(12), nullable=True),
        sa.Column("to_state", sa.String(12), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("detail", sa.String(400), nullable=True),
    )
    op.create_index("ix_transaction_events_transaction_id", "transaction_events", ["transaction_id"])
    op.create_table(
        "sms_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("msisdn", sa.String(20), nullable=False),
        sa.Column("language", sa.String(5), nullable=False),
        sa.Column("text", sa.UnicodeText, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("smsc_message_ids", sa.String(400), nullable=True),
        sa.Column("data_coding", sa.Integer, nullable=True),
        sa.Column("parts", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(400), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("payment_id", "kind", name="uq_sms_outbox_payment_kind"),
    )
    op.create_index("ix_sms_outbox_due", "sms_outbox", ["state", "next_attempt_at"])


def downgrade():
    op.drop_table("sms_outbox")
    op.drop_table("transaction_events")
    op.drop_table("transactions")
