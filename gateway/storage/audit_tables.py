"""Tables of the tamper-evident exchange log and its signed checkpoints (migration 0004 creates them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from gateway.storage.tables import BigId, UTCDateTime, metadata

# Append-only (database triggers refuse UPDATE and DELETE); every record is chained to the one before by
# `prev_hash`/`hash`, see gateway/audit/chain.py for the canonical form the hash covers.
exchange_log = Table(
    "exchange_log",
    metadata,
    # Assigned by gateway.audit.chain.append under a lock, contiguous from 1: a gap means a deletion.
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    # received, attempt, callback, refusal, read, admin, security, escalation
    Column("kind", String(20), nullable=False),
    Column("message_id", String(36)),
    Column("delivery_id", BigInteger),
    Column("case_id", String(128)),
    Column("peer", String(100)),  # counterpart instance or client id
    Column("client", String(100)),  # verified identity, null when none was verified
    Column("signer", String(200)),  # verified key id or certificate fingerprint
    Column("iin_hash", String(64)),  # keyed hash (security.pii), never the clear IIN
    Column("status_code", Integer),
    Column("result", String(20)),
    Column("request_hash", String(64)),  # SHA-256 hex of the raw bytes, kept even when the bytes are not
    Column("response_hash", String(64)),
    Column("request_raw", LargeBinary),  # null when the counterpart is metadata-only
    Column("response_raw", LargeBinary),
    Column("detail", Text),  # JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_exchange_log_message", exchange_log.c.message_id)
Index("ix_exchange_log_at", exchange_log.c.at)
# The auditor's filters, each ending with seq: the newest records of one filter come in seq order, no sort (0008).
Index("ix_exchange_log_case_seq", exchange_log.c.case_id, exchange_log.c.seq)
Index("ix_exchange_log_iin_seq", exchange_log.c.iin_hash, exchange_log.c.seq)
Index("ix_exchange_log_peer_seq", exchange_log.c.peer, exchange_log.c.seq)
Index("ix_exchange_log_client_seq", exchange_log.c.client, exchange_log.c.seq)
Index("ix_exchange_log_kind_seq", exchange_log.c.kind, exchange_log.c.seq)
Index("ix_exchange_log_result_seq", exchange_log.c.result, exchange_log.c.seq)
Index("ix_exchange_log_status_seq", exchange_log.c.status_code, exchange_log.c.seq)

# A signed statement "the log had `size` records and its last hash was `head_hash`": whoever rewrites
# the covered prefix, or cuts it short, cannot produce a matching signature without the gateway's key.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("kid", String(200), nullable=False),
    Column("alg", String(40), nullable=False),
    Column("signature", Text, nullable=False),  # base64
)
Index("ix_audit_checkpoints_size", audit_checkpoints.c.size)
