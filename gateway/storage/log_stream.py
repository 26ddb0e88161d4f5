"""The exchange log and its checkpoints read a page per query, in order, from a thread or on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, column, create_engine, func, or_, select
from sqlalchemy.engine import Connection

from gateway.storage.audit_tables import audit_checkpoints, exchange_log
from gateway.storage.db import Engines

# A query on a sync connection, and what runs one for a reader in a thread.
Query = Callable[[Connection], Any]
Fetch = Callable[[Query], Any]


def bounds(conn: Connection) -> tuple[int, int]:
    """(last checkpoint id, last seq), read in this order.

    Every checkpoint committed before the head is read covers records at or below that head, so a
    log still growing during verification is read as one consistent prefix, and a checkpoint beyond
    the records read means truncation, not a race."""
    cp_max = conn.execute(select(func.max(audit_checkpoints.c.id))).scalar() or 0
    seq_max = conn.execute(select(func.max(exchange_log.c.seq))).scalar() or 0
    return cp_max, seq_max


def record_rows(conn: Connection, fields: Sequence[str], *, after: int, upto: int, limit: int) -> list[Any]:
    """Records after seq `after`, in seq order, as the driver gives them: untyped columns on purpose, without
    SQLAlchemy's per-value result processing (a third of the read time)."""
    return conn.execute(
        select(*[column(name) for name in fields]).select_from(exchange_log)
        .where(exchange_log.c.seq > after, exchange_log.c.seq <= upto)
        .order_by(exchange_log.c.seq).limit(limit)
    ).all()


def checkpoint_rows(conn: Connection, fields: Sequence[str], *, after: tuple[int, int], upto_id: int,
                    limit: int) -> list[Any]:
    """Checkpoints after (size, id) `after`, in (size, id) order."""
    size, cp_id = after
    cps = audit_checkpoints.c
    return conn.execute(
        select(*[cps[name] for name in fields])
        .where(cps.id <= upto_id, or_(cps.size > size, and_(cps.size == size, cps.id > cp_id)))
        .order_by(cps.size, cps.id).limit(limit)
    ).all()


async def read_in_thread(engines: Engines, work: Callable[[Fetch], Any]) -> Any:
    """`work(fetch)` in a thread, so that hashing or writing never blocks the event loop; `fetch(query)` runs a
    query on a sync connection and returns its result.

    SQLite: the thread reads through its own stdlib-driver engine (no hop per page). PostgreSQL: each
    query is run by the event loop on asyncpg and handed to the thread."""
    url = engines.read.url
    if url.get_backend_name() == "sqlite":
        def in_thread() -> Any:
            engine = create_engine(url.set(drivername="sqlite"))
            try:
                with engine.connect() as conn:
                    return work(lambda query: query(conn))
            finally:
                engine.dispose()

        return await asyncio.to_thread(in_thread)

    loop = asyncio.get_running_loop()

    async def run(query: Query) -> Any:
        async with engines.read.connect() as aconn:
            return await aconn.run_sync(query)

    def fetch(query: Query) -> Any:
        return asyncio.run_coroutine_threadsafe(run(query), loop).result()

    return await asyncio.to_thread(work, fetch)


async def log_size(engines: Engines) -> int:
    """The last seq of the store's log (0 when empty)."""
    async with engines.read.connect() as conn:
        return (await conn.execute(select(func.max(exchange_log.c.seq)))).scalar() or 0
