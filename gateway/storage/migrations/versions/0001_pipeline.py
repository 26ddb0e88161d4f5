"""Pipeline tables: messages, cases, referrals, deliveries (outbox), exchanges (one row per hop).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("accept_response", sa.Text, nullable=False),
    )
    op.create_index("ix_messages_case", "messages", ["case_id"])
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(128), primary_key=True),
        sa.Column("region", sa.String(8), nullable=False),
        sa.Column("registered_message_id", sa.String(36), nullable=False),
    )
    op.create_table(
        "referrals",
        sa.Column("referral_id", sa.String(128), primary_key=True),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("risk_id", sa.String(128)),
        sa.Column("request_message_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("counterpart", sa.String(20), nullable=False),
        sa.Column("instance", sa.String(64)),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("first_attempt_at", TS),
        sa.Column("lease_until", TS),
        sa.Column("claimed_by", sa.String(40)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("last_status", sa.Integer),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_deliveries_message", "deliveries", ["message_id"])
    op.create_index("ix_deliveries_case_state", "deliveries", ["case_id", "state"])
    op.create_table(
        "exchanges",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36)),
        sa.Column("delivery_id", sa.BigInteger),
        sa.Column("hop", sa.String(12), nullable=False),
        sa.Column("peer", sa.String(100), nullable=False),
        sa.Column("attempt", sa.Integer),
        sa.Column("request_in_at", TS),
        sa.Column("request_out_at", TS),
        sa.Column("response_in_at", TS),
        sa.Column("response_out_at", TS),
        sa.Column("request_bytes", sa.Integer),
        sa.Column("response_bytes", sa.Integer),
        sa.Column("status_code", sa.Integer),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_exchanges_message", "exchanges", ["message_id"])


def downgrade() -> None:
    for table in ("exchanges", "deliveries", "referrals", "cases", "messages"):
        op.drop_table(table)
