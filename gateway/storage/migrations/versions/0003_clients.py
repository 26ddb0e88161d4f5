"""Clients of the gateway: machine clients with a pinned key, people with a hashed bearer token.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(100), primary_key=True),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("keyid", sa.String(200), unique=True),
        sa.Column("public_key", sa.Text),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("clients")
