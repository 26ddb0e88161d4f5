"""Alerts: the gateway's own alerts, their grouped notifications, the e-mail outbox and the monitor's lease.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("open_key", sa.String(450), unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.String(100)),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("notified", sa.String(16)),
    )
    op.create_index("ix_alerts_state", "alerts", ["state", "notified"])
    op.create_table(
        "alert_notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("alerts", sa.Text, nullable=False),
    )
    op.create_table(
        "alert_emails",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_alert_emails_due", "alert_emails", ["state", "next_attempt_at"])
    op.create_index("ix_alert_emails_notification", "alert_emails", ["notification_id"])
    op.create_table(
        "alert_monitor",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_monitor")
    op.drop_index("ix_alert_emails_notification", table_name="alert_emails")
    op.drop_index("ix_alert_emails_due", table_name="alert_emails")
    op.drop_table("alert_emails")
    op.drop_table("alert_notifications")
    op.drop_index("ix_alerts_state", table_name="alerts")
    op.drop_table("alerts")
