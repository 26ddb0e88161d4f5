"""The exchange log's reads for auditors: filtered pages, one record with its neighbours, checkpoints, export pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select, union

from gateway.storage.audit_tables import audit_checkpoints, exchange_log
from gateway.storage.db import Engines

# What a metadata row carries: no raw bytes, no iin_hash (a person is found only by IIN search).
METADATA_COLUMNS = ("seq", "at", "kind", "message_id", "delivery_id", "case_id", "peer", "client", "signer",
                    "status_code", "result", "request_hash", "response_hash", "detail", "prev_hash", "hash")
_LOG = exchange_log.c
_CP = audit_checkpoints.c


@dataclass(frozen=True, kw_only=True)
class LogFilter:
    """Every condition a page is narrowed by; `peers` and `clients` together mean one peer (either matches)."""

    case_id: str | None = None
    iin_hash: str | None = None
    peers: frozenset[str] | None = None
    clients: frozenset[str] | None = None
    kind: str | None = None
    result: str | None = None
    status_code: int | None = None
    since: datetime | None = None  # at >= since
    until: datetime | None = None  # at < until


@dataclass(frozen=True, kw_only=True)
class StoredRecord:
    record: dict[str, Any]
    previous_hash: str | None  # the hash of the record before; None for seq 1 or when it is missing
    checkpoint: dict[str, Any] | None  # the first checkpoint covering the record


def _metadata_select() -> Select:
    # Flags instead of the raw columns: a page never loads the sealed bytes.
    return select(*(_LOG[name] for name in METADATA_COLUMNS),
                  _LOG.request_raw.is_not(None).label("request_kept"),
                  _LOG.response_raw.is_not(None).label("response_kept"))


async def exchange_page(engines: Engines, *, filter: LogFilter, cursor_seq: int | None, newest_first: bool,
                        count: int) -> list[dict[str, Any]]:
    """Up to `count` metadata rows in seq order after `cursor_seq` (newest first: before it)."""
    if newest_first:
        query = _metadata_select()
        if cursor_seq is not None:
            query = query.where(_LOG.seq < cursor_seq)
    else:
        query = _metadata_select().where(_LOG.seq > (cursor_seq if cursor_seq is not None else 0))
    f = filter
    if f.case_id is not None:
        query = query.where(_LOG.case_id == f.case_id)
    if f.iin_hash is not None:
        cases = select(_LOG.case_id).where(_LOG.iin_hash == f.iin_hash, _LOG.case_id.is_not(None)).distinct()
        query = query.where(or_(_LOG.iin_hash == f.iin_hash, _LOG.case_id.in_(cases)))
    branches = []
    if f.peers is not None or f.clients is not None:
        names, clients = f.peers or frozenset(), f.clients or frozenset()
        if any(v is not None for v in (f.case_id, f.iin_hash, f.kind, f.result, f.status_code)):
            # another filter's (column, seq) index walks seq order already; the peer is checked on the way
            query = query.where(or_(_LOG.peer.in_(names), _LOG.client.in_(clients)))
        else:
            branches = [_LOG.peer == n for n in sorted(names)] + [_LOG.client == c for c in sorted(clients)]
    if f.kind is not None:
        query = query.where(_LOG.kind == f.kind)
    if f.result is not None:
        query = query.where(_LOG.result == f.result)
    if f.status_code is not None:
        query = query.where(_LOG.status_code == f.status_code)
    if f.since is not None:
        query = query.where(_LOG.at >= f.since)
    if f.until is not None:
        query = query.where(_LOG.at < f.until)
    async with engines.read.connect() as conn:
        order = _LOG.seq.desc() if newest_first else _LOG.seq
        if branches:
            # One page per peer value, each read in seq order from its (column, seq) index, then merged:
            # an OR over the values sorts every match first (seconds for a busy peer in 1M records).
            pages = union(*(select(query.where(b).order_by(order).limit(count).subquery())
                            for b in branches)).subquery()
            query = select(pages)
            order = pages.c.seq.desc() if newest_first else pages.c.seq
        rows = (await conn.execute(query.order_by(order).limit(count))).all()
    return [dict(row._mapping) for row in rows]


async def exchange_record(engines: Engines, *, seq: int) -> StoredRecord | None:
    """The whole record `seq` (raw columns included), the hash before it and its first checkpoint."""
    async with engines.read.connect() as conn:
        row = (await conn.execute(select(exchange_log).where(_LOG.seq == seq))).first()
        if row is None:
            return None
        before = None if seq == 1 else (await conn.execute(select(_LOG.hash).where(_LOG.seq == seq - 1))).scalar()
        cp = (await conn.execute(select(audit_checkpoints).where(_CP.size >= seq)
                                 .order_by(_CP.size, _CP.id).limit(1))).first()
    return StoredRecord(record=dict(row._mapping), previous_hash=before,
                        checkpoint=None if cp is None else dict(cp._mapping))


async def latest_checkpoints(engines: Engines, *, limit: int) -> list[dict[str, Any]]:
    async with engines.read.connect() as conn:
        rows = (await conn.execute(select(audit_checkpoints).order_by(_CP.id.desc()).limit(limit))).all()
    return [dict(row._mapping) for row in rows]


async def metadata_after(engines: Engines, *, after: int, count: int, case_id: str | None = None,
                         since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Up to `count` metadata rows after seq `after`, in seq order (an export's page; `until` is inclusive)."""
    query = _metadata_select()
    if case_id is not None:
        query = query.where(_LOG.case_id == case_id)
    if since is not None:
        query = query.where(_LOG.at >= since)
    if until is not None:
        query = query.where(_LOG.at <= until)
    async with engines.read.connect() as conn:
        rows = (await conn.execute(query.where(_LOG.seq > after).order_by(_LOG.seq).limit(count))).all()
    return [dict(row._mapping) for row in rows]
