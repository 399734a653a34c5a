"""A keyed hash of the PAN beside the masked PAN, for look-ups by card.

HMAC-SHA-256 under BILLGW_PAN_HMAC_KEY (docs/security.md): an operator can
find a card's payments (``billgw journal find --pan``) while the journal
holds no card number.  Rows written without the key have none.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("pan_hash", sa.String(64), nullable=True))
    op.create_index("ix_transactions_pan_hash", "transactions", ["pan_hash"])


def downgrade():
    op.drop_index("ix_transactions_pan_hash", table_name="transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("pan_hash")
