"""The SMPP link's health, one row per bind, for billgw audit.

A bind refused for its credentials stops the link (no reconnect storm); the
gateway process records that state here so that ``billgw audit`` -- another
process, maybe on another host sharing the database -- can report it
(sms/health.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sms_link_health",
        sa.Column("link", sa.String(120), primary_key=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("last_bind_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(400), nullable=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade():
    op.drop_table("sms_link_health")
