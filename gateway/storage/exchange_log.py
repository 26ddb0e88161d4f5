"""The exchange log's statements: the head under the appenders' lock, record and checkpoint inserts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection

from gateway.storage.audit_tables import audit_checkpoints, exchange_log

# pg_advisory_xact_lock key ("auditlog"): appenders in every process take turns reading the head.
LOCK_KEY = 0x61756469746C6F67


def locked_head(conn: Connection) -> tuple[int, str] | None:
    """Take the appenders' turn (until this transaction ends), then (seq, hash) of the last record (None: empty).

    SQLite needs no lock: one writer connection (BEGIN IMMEDIATE) already serialises appends. On PostgreSQL
    an advisory transaction lock makes appenders of every process take turns; it relies on READ COMMITTED
    (the default), where the head read after the lock sees the previous holder's commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    return head(conn)


def head(conn: Connection) -> tuple[int, str] | None:
    """(seq, hash) of the last record; None for an empty log."""
    row = conn.execute(
        select(exchange_log.c.seq, exchange_log.c.hash).order_by(exchange_log.c.seq.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None


def insert_records(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(insert(exchange_log), rows)


def last_checkpoint_size(conn: Connection) -> int | None:
    return conn.execute(select(audit_checkpoints.c.size).order_by(audit_checkpoints.c.id.desc()).limit(1)).scalar()


def insert_checkpoint(conn: Connection, row: dict[str, Any]) -> int:
    return conn.execute(insert(audit_checkpoints).returning(audit_checkpoints.c.id), row).scalar_one()
