"""Tamper-evident exchange log and its signed checkpoints, append-only by trigger (and by grant on PostgreSQL).

Both tables refuse UPDATE and DELETE through triggers on SQLite and PostgreSQL (and TRUNCATE on
PostgreSQL), so no code path of the gateway can rewrite history by mistake; the hash chain and the
signed checkpoints (gateway/audit/chain.py) make a deliberate rewrite by someone with DDL rights
visible to `gateway audit verify`.

On PostgreSQL the migration also revokes UPDATE, DELETE and TRUNCATE from PUBLIC. The owner of a
table keeps every right on it whatever is revoked, and can drop the triggers, so in production the
gateway should not connect as the owner. An operator runs the migrations as the owning role and
gives the gateway's own role only what it needs:

    -- as the owner (the role that ran `gateway db upgrade`)
    REVOKE ALL ON exchange_log, audit_checkpoints FROM gateway_app;
    GRANT SELECT, INSERT ON exchange_log, audit_checkpoints TO gateway_app;
    GRANT USAGE ON SEQUENCE audit_checkpoints_id_seq TO gateway_app;
    -- every other table of the gateway: SELECT, INSERT, UPDATE, DELETE as before

`gateway_app` is then unable to UPDATE, DELETE or TRUNCATE the log even with the triggers gone.
The chain appender takes `pg_advisory_xact_lock`, which needs no grant.

On SQLite a later migration that rebuilds `exchange_log` or `audit_checkpoints` (Alembic batch mode
copies the table) must create the triggers again: they do not survive the copy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
APPEND_ONLY = ("exchange_log", "audit_checkpoints")


def upgrade() -> None:
    op.create_table(
        "exchange_log",
        sa.Column("seq", BigId, primary_key=True, autoincrement=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("message_id", sa.String(36)),
        sa.Column("delivery_id", sa.BigInteger),
        sa.Column("case_id", sa.String(128)),
        sa.Column("peer", sa.String(100)),
        sa.Column("client", sa.String(100)),
        sa.Column("signer", sa.String(200)),
        sa.Column("iin_hash", sa.String(64)),
        sa.Column("status_code", sa.Integer),
        sa.Column("result", sa.String(20)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("response_hash", sa.String(64)),
        sa.Column("request_raw", sa.LargeBinary),
        sa.Column("response_raw", sa.LargeBinary),
        sa.Column("detail", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_exchange_log_case", "exchange_log", ["case_id"])
    op.create_index("ix_exchange_log_message", "exchange_log", ["message_id"])
    op.create_index("ix_exchange_log_iin", "exchange_log", ["iin_hash"])
    op.create_index("ix_exchange_log_peer", "exchange_log", ["peer"])
    op.create_index("ix_exchange_log_kind", "exchange_log", ["kind"])
    op.create_index("ix_exchange_log_at", "exchange_log", ["at"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("kid", sa.String(200), nullable=False),
        sa.Column("alg", sa.String(40), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_checkpoints_size", "audit_checkpoints", ["size"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP\n"
            "    USING ERRCODE = 'insufficient_privilege';\n"
            "END\n"
            "$$"
        )
        for table in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")
            op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC")
    else:
        for table in APPEND_ONLY:
            for action in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    else:
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.drop_table("audit_checkpoints")
    op.drop_table("exchange_log")
