"""The exchange log and its checkpoints read from the store in order, a page per query, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, column, create_engine, func, or_, select
from sqlalchemy.engine import Connection

from gateway.audit.chain import CHECKPOINT_FIELDS, RECORD_FIELDS, format_time
from gateway.storage.audit_tables import audit_checkpoints, exchange_log
from gateway.storage.db import Engines

PAGE = 5_000  # rows per query: ~6 MiB of records in memory at most
PROGRESS_EVERY = 10_000  # records between two progress reports of a pass over the log

# Untyped on purpose: the driver's own values, without SQLAlchemy's per-value result processing
# (a third of the read time); `_stored_time` turns what each backend gives for `at` into RFC 3339.
_RECORD_COLUMNS = [column(name) for name in RECORD_FIELDS]
_CHECKPOINT_COLUMNS = [audit_checkpoints.c[name] for name in CHECKPOINT_FIELDS]


def _bounds(conn: Connection) -> tuple[int, int]:
    """(last checkpoint id, last seq), read in this order.

    Every checkpoint committed before the head is read covers records at or below that head, so a
    log still growing during verification is read as one consistent prefix, and a checkpoint beyond
    the records read means truncation, not a race."""
    cp_max = conn.execute(select(func.max(audit_checkpoints.c.id))).scalar() or 0
    seq_max = conn.execute(select(func.max(exchange_log.c.seq))).scalar() or 0
    return cp_max, seq_max


def _stored_time(value: datetime | str) -> str:
    if isinstance(value, str):
        # SQLite keeps UTCDateTime as naive UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`.
        if len(value) == 26 and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"
        return format_time(datetime.fromisoformat(value).replace(tzinfo=timezone.utc))
    return format_time(value)


def _record_page(conn: Connection, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
    """Records after seq `after`, `at` as its RFC 3339 text (what the hash covers)."""
    rows = conn.execute(
        select(*_RECORD_COLUMNS).select_from(exchange_log)
        .where(exchange_log.c.seq > after, exchange_log.c.seq <= upto)
        .order_by(exchange_log.c.seq).limit(limit)
    ).all()
    out = []
    for row in rows:
        record = dict(zip(RECORD_FIELDS, row))
        record["at"] = _stored_time(record["at"])
        out.append(record)
    return out


def _checkpoint_page(conn: Connection, after: tuple[int, int], upto_id: int, limit: int) -> list[dict[str, Any]]:
    size, cp_id = after
    cps = audit_checkpoints.c
    rows = conn.execute(
        select(*_CHECKPOINT_COLUMNS)
        .where(cps.id <= upto_id, or_(cps.size > size, and_(cps.size == size, cps.id > cp_id)))
        .order_by(cps.size, cps.id).limit(limit)
    ).all()
    return [dict(zip(CHECKPOINT_FIELDS, row)) for row in rows]


PageFetch = Callable[[Callable[[Connection], list[dict[str, Any]]]], list[dict[str, Any]]]


def _stream(fetch: PageFetch, *, upto_seq: int, upto_cp: int, page: int
            ) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """Records in seq order and checkpoints in size order, a page per query (keyset pagination)."""

    def records() -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            rows = fetch(lambda c: _record_page(c, after, upto_seq, page))
            if not rows:
                return
            yield from rows
            after = rows[-1]["seq"]

    def checkpoints() -> Iterator[dict[str, Any]]:
        after = (-1, 0)
        while True:
            rows = fetch(lambda c: _checkpoint_page(c, after, upto_cp, page))
            if not rows:
                return
            yield from rows
            after = (rows[-1]["size"], rows[-1]["id"])

    return records(), checkpoints()


def stream_connection(conn: Connection, *, page: int = PAGE
                      ) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """(records in seq order, checkpoints in size order) of the log as it is now, read a page at a time."""
    cp_max, seq_max = _bounds(conn)
    return _stream(lambda q: q(conn), upto_seq=seq_max, upto_cp=cp_max, page=page)


LogWork = Callable[[Iterator[dict[str, Any]], Iterator[dict[str, Any]]], Any]  # (records, checkpoints) -> result


async def run_on_log(*, engines: Engines, work: LogWork, page: int = PAGE) -> Any:
    """`work(records, checkpoints)` over the store's log as it is now, in a thread, so that hashing or
    writing never blocks the event loop.

    SQLite: the thread reads through its own stdlib-driver engine (no hop per page). PostgreSQL: each
    page is fetched by the event loop on asyncpg and handed to the thread."""
    url = engines.read.url
    if url.get_backend_name() == "sqlite":
        def in_thread() -> Any:
            engine = create_engine(url.set(drivername="sqlite"))
            try:
                with engine.connect() as conn:
                    return work(*stream_connection(conn, page=page))
            finally:
                engine.dispose()

        return await asyncio.to_thread(in_thread)

    loop = asyncio.get_running_loop()

    async def run(query: Callable[[Connection], Any]) -> Any:
        async with engines.read.connect() as aconn:
            return await aconn.run_sync(query)

    def fetch(query: Callable[[Connection], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(run(query), loop).result()

    cp_max, seq_max = await run(_bounds)
    return await asyncio.to_thread(
        lambda: work(*_stream(fetch, upto_seq=seq_max, upto_cp=cp_max, page=page)))


async def log_size(engines: Engines) -> int:
    """The last seq of the store's log (0 when empty): the total for a progress bar."""
    async with engines.read.connect() as conn:
        return (await conn.execute(select(func.max(exchange_log.c.seq)))).scalar() or 0
