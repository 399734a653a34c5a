"""The local rule a request broke, kept with the payment.

An advice (0220) for a payment the gateway declined on its own rules must
not be posted; the decision needs the rule's verdict as it was when the
0200 (or the advice itself) was journaled, also after a restart.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("local_problem", sa.String(40), nullable=True))


def downgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("local_problem")
