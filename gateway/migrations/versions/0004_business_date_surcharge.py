"""Business dates, cut-overs, and the surcharge and fee bearer of a payment.

A payment's business date (the settlement day it belongs to) is decided
when it is journaled and kept on its row, so settlement, reconciliation and
every gateway process sharing the database read the same day; a reversal
keeps its original's.  ``business_days`` records each cut-over (an 0800
with F70 = 201): the date it opened, when and by whom.  The late surcharge
a payment settled and who bore its fee are journaled apart from its amount.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("business_date", sa.String(8), nullable=True))
        batch.add_column(sa.Column("surcharge", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("fee_bearer", sa.String(8), nullable=True))
        batch.create_index("ix_transactions_business_date", ["business_date"])
    with op.batch_alter_table("reversals") as batch:
        batch.add_column(sa.Column("business_date", sa.String(8), nullable=True))
    op.create_table(
        "business_days",
        sa.Column("business_date", sa.String(8), primary_key=True),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("opened_by", sa.String(64), nullable=False),
    )


def downgrade():
    op.drop_table("business_days")
    with op.batch_alter_table("reversals") as batch:
        batch.drop_column("business_date")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_index("ix_transactions_business_date")
        batch.drop_column("fee_bearer")
        batch.drop_column("surcharge")
        batch.drop_column("business_date")
