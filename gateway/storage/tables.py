"""Tables of the store; the Alembic migrations create exactly these."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, whatever the backend keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # noqa: ANN001
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(timezone.utc)
        # SQLite compares these as text: keep one format (naive UTC) so ordering is right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):  # noqa: ANN001
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("type", String(40), nullable=False),
    Column("case_id", String(128), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("source", String(100), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("accept_response", Text, nullable=False),
)
Index("ix_messages_case", messages.c.case_id)

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(128), primary_key=True),
    Column("region", String(8), nullable=False),
    Column("registered_message_id", String(36), nullable=False),
)

referrals = Table(
    "referrals",
    metadata,
    Column("referral_id", String(128), primary_key=True),
    Column("case_id", String(128), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("risk_id", String(128)),
    Column("request_message_id", String(36), nullable=False),
    Column("status", String(20), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_referrals_case", referrals.c.case_id)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False),
    Column("case_id", String(128), nullable=False),
    Column("counterpart", String(20), nullable=False),
    Column("instance", String(64)),
    # pending -> in_flight -> delivered | pending (retry) | dead; parked while no instance serves it
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # attempts made before the last replay: numbering goes on, the retry policy counts from here
    Column("attempt_base", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("first_attempt_at", UTCDateTime),
    Column("lease_until", UTCDateTime),
    Column("claimed_by", String(40)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("last_status", Integer),
    Column("reason", Text),
)
Index("ix_deliveries_due", deliveries.c.state, deliveries.c.next_attempt_at)
Index("ix_deliveries_message", deliveries.c.message_id)
Index("ix_deliveries_case_state", deliveries.c.case_id, deliveries.c.state)

# One row per hop, with the timestamps X-Road's operational monitoring keeps.
exchanges = Table(
    "exchanges",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(36)),
    Column("delivery_id", BigInteger),
    # received: from a sender (client or counterpart callback); attempt: one try towards a counterpart
    Column("hop", String(12), nullable=False),
    Column("peer", String(100), nullable=False),
    Column("attempt", Integer),
    Column("request_in_at", UTCDateTime),
    Column("request_out_at", UTCDateTime),
    Column("response_in_at", UTCDateTime),
    Column("response_out_at", UTCDateTime),
    Column("request_bytes", Integer),
    Column("response_bytes", Integer),
    Column("status_code", Integer),
    Column("result", String(16), nullable=False),
    Column("error", Text),
)
Index("ix_exchanges_message", exchanges.c.message_id)

# Nonces of verified signatures until their signature expires (replay protection across processes).
nonces = Table(
    "nonces",
    metadata,
    Column("keyid", String(200), primary_key=True),
    Column("nonce", String(200), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_nonces_expires", nonces.c.expires_at)

# Who may call the gateway: machine clients by their pinned key, people by a hashed token.
clients = Table(
    "clients",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("roles", String(200), nullable=False),  # space-separated: system admin auditor
    Column("keyid", String(200), unique=True),  # RFC 7638 thumbprint of the pinned public key
    Column("public_key", Text),  # PEM (or JWK JSON) as given to `gateway clients add`
    Column("token_hash", String(64), unique=True),  # SHA-256 of the bearer token; the token itself is never kept
    Column("description", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),  # kept to the minute: written in batches, not on every request
)

# Document requests: one stored copy per (record kind, person, instance) while valid; the person is a keyed hash.
records = Table(
    "records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("record_kind", String(40), nullable=False),
    Column("subject", String(64), nullable=False),  # keyed hash of the IIN (security.pii)
    Column("instance", String(64), nullable=False),
    Column("status", String(12), nullable=False),  # found | not_found
    Column("data", Text),  # the record, AES-GCM encrypted (security.pii)
    Column("as_of", UTCDateTime),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("request_id", String(36), nullable=False),  # the upstream call that fetched it
)
Index("ux_records_key", records.c.record_kind, records.c.subject, records.c.instance, unique=True)

document_requests = Table(
    "document_requests",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("client_id", String(100), nullable=False),
    Column("case_id", String(128), nullable=False),
    Column("record_kind", String(40), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("iin", Text, nullable=False),  # encrypted: a crashed leader's successor needs it to ask again
    Column("purpose", Text, nullable=False),
    Column("instance", String(64), nullable=False),
    Column("state", String(12), nullable=False),  # pending | done | failed
    Column("record_id", BigInteger),
    Column("served_from", String(12)),  # cache | upstream
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Column("error", Text),
)
Index("ix_document_requests_key", document_requests.c.record_kind, document_requests.c.subject,
      document_requests.c.instance, document_requests.c.state)
Index("ix_document_requests_case", document_requests.c.case_id)

# At most one upstream call per record key at a time, across every gateway process (single-flight).
flights = Table(
    "flights",
    metadata,
    Column("record_kind", String(40), primary_key=True),
    Column("subject", String(64), primary_key=True),
    Column("instance", String(64), primary_key=True),
    Column("leader", String(64), nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("waiters", Integer, nullable=False, default=0),
    # The lookup's retry state: the policy counts attempts and time from the first, whoever leads the flight.
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("first_attempt_at", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
)

# Idempotency-Key (IETF httpapi draft): the first response to (client, key) is kept and replayed.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(12), nullable=False),  # in_flight | done
    Column("status", Integer),
    Column("headers", Text),
    Column("body", LargeBinary),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_idempotency_expires", idempotency_keys.c.expires_at)

# Counterpart configuration changed by administrators: each change a new version; every process applies the latest.
counterpart_config = Table(
    "counterpart_config",
    metadata,
    Column("version", BigId, primary_key=True, autoincrement=True),
    Column("document", Text, nullable=False),  # the whole counterparts file as JSON, validated before it is kept
    Column("created_at", UTCDateTime, nullable=False),
    Column("changed_by", String(100), nullable=False),
    Column("change", Text, nullable=False),  # what changed: instance, before, after
)

# Console sessions: a person's bearer token exchanged once for a random session id; only its hash is kept,
# so a stolen database copy signs nobody in, and every process on PostgreSQL sees the same sessions.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the cookie value
    Column("client_id", String(100), nullable=False),
    Column("csrf", String(64), nullable=False),  # the synchronizer token every state-changing form carries
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),  # absolute expiry; idle expiry is last_seen_at + idle
    Column("ended_at", UTCDateTime),  # signed out: the old cookie is refused from then on
)
Index("ix_console_sessions_expires", console_sessions.c.expires_at)

# Alerts the gateway raises about itself (gateway/alerts): one row per firing; a condition that clears and comes
# back is a new row. `open_key` (rule + subject) is set while the alert is not resolved, and unique, so however
# many processes look, one condition is one open alert (NULLs do not collide once resolved).
alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rule", String(40), nullable=False),
    Column("subject", String(400), nullable=False),
    Column("open_key", String(450), unique=True),
    Column("state", String(16), nullable=False),  # firing -> acknowledged -> resolved
    Column("severity", String(10), nullable=False),  # warning | critical
    Column("summary", Text, nullable=False),
    Column("detail", Text),  # JSON: what the rule saw (never personal data)
    Column("count", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),  # when the condition began, as far as the gateway knows
    Column("fired_at", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),  # last change of state, count, severity: grouping settles on it
    Column("acknowledged_at", UTCDateTime),
    Column("acknowledged_by", String(100)),
    Column("resolved_at", UTCDateTime),
    Column("notified", String(16)),  # the last state sent to the channels: none yet, firing, resolved
)
Index("ix_alerts_state", alerts.c.state, alerts.c.notified)

# One grouped notification of a rule's changes; its webhooks are deliveries of the alert.notification message.
alert_notifications = Table(
    "alert_notifications",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rule", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("message_id", String(36), nullable=False),
    Column("count", Integer, nullable=False),
    Column("alerts", Text, nullable=False),  # JSON: [{alert_id, state}]
)

# The e-mail outbox: one row per notification and e-mail channel, retried by the channel's policy.
alert_emails = Table(
    "alert_emails",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("notification_id", BigInteger, nullable=False),
    Column("channel", String(64), nullable=False),
    Column("state", String(12), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("first_attempt_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("last_error", Text),
)
Index("ix_alert_emails_due", alert_emails.c.state, alert_emails.c.next_attempt_at)
Index("ix_alert_emails_notification", alert_emails.c.notification_id)

# Which process evaluates alerts and sends e-mail: one at a time, by a lease it renews.
alert_monitor = Table(
    "alert_monitor",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
)
