"""Document requests: stored records, requests, single-flight leases, and Idempotency-Key responses.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("record_kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("data", sa.Text),
        sa.Column("as_of", sa.DateTime(timezone=True)),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
    )
    op.create_index("ux_records_key", "records", ["record_kind", "subject", "instance"], unique=True)
    op.create_table(
        "document_requests",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("record_kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("iin", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("record_id", sa.BigInteger),
        sa.Column("served_from", sa.String(12)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_document_requests_key", "document_requests",
                    ["record_kind", "subject", "instance", "state"])
    op.create_table(
        "flights",
        sa.Column("record_kind", sa.String(40), primary_key=True),
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("leader", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("waiters", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("client_id", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("headers", sa.Text),
        sa.Column("body", sa.LargeBinary),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_expires", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    for table in ("idempotency_keys", "flights", "document_requests", "records"):
        op.drop_table(table)
