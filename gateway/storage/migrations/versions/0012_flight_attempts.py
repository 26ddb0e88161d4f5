"""A document lookup's retry state in its flight row, so the retry policy counts on across a takeover.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flights") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("first_attempt_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("flights") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("first_attempt_at")
        batch.drop_column("attempts")
