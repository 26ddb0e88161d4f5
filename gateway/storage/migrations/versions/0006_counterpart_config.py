"""Counterpart configuration versions written by administrators and applied live by every process.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "counterpart_config",
        sa.Column("version", BigId, primary_key=True, autoincrement=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(100), nullable=False),
        sa.Column("change", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("counterpart_config")
