"""Nonces of verified signatures, shared by every gateway process so a replay is caught anywhere.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nonces",
        sa.Column("keyid", sa.String(200), primary_key=True),
        sa.Column("nonce", sa.String(200), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_nonces_expires", "nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_table("nonces")
