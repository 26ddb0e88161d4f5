"""The exchange log and its checkpoints as streams of records, a page per query, off the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable

from gateway.audit.chain import CHECKPOINT_FIELDS, RECORD_FIELDS, format_time
from gateway.storage import log_stream as sql
from gateway.storage.batch import Transaction
from gateway.storage.db import Engines
from gateway.storage.log_stream import Fetch

PAGE = 5_000  # rows per query: ~6 MiB of records in memory at most
PROGRESS_EVERY = 10_000  # records between two progress reports of a pass over the log


def _stored_time(value: datetime | str) -> str:
    """What each backend gives for `at`, as the RFC 3339 text the hash covers."""
    if isinstance(value, str):
        # SQLite keeps UTCDateTime as naive UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`.
        if len(value) == 26 and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"
        return format_time(datetime.fromisoformat(value).replace(tzinfo=timezone.utc))
    return format_time(value)


def _record_page(conn: Transaction, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
    out = []
    for row in sql.record_rows(conn, RECORD_FIELDS, after=after, upto=upto, limit=limit):
        record = dict(zip(RECORD_FIELDS, row))
        record["at"] = _stored_time(record["at"])
        out.append(record)
    return out


def _checkpoint_page(conn: Transaction, after: tuple[int, int], upto_id: int, limit: int) -> list[dict[str, Any]]:
    rows = sql.checkpoint_rows(conn, CHECKPOINT_FIELDS, after=after, upto_id=upto_id, limit=limit)
    return [dict(zip(CHECKPOINT_FIELDS, row)) for row in rows]


def _stream(fetch: Fetch, *, upto_seq: int, upto_cp: int, page: int
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


def stream_connection(conn: Transaction, *, page: int = PAGE
                      ) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """(records in seq order, checkpoints in size order) of the log as it is now, read a page at a time."""
    cp_max, seq_max = sql.bounds(conn)
    return _stream(lambda q: q(conn), upto_seq=seq_max, upto_cp=cp_max, page=page)


LogWork = Callable[[Iterator[dict[str, Any]], Iterator[dict[str, Any]]], Any]  # (records, checkpoints) -> result


async def run_on_log(*, engines: Engines, work: LogWork, page: int = PAGE) -> Any:
    """`work(records, checkpoints)` over the store's log as it is now, in a thread (see read_in_thread)."""

    def in_thread(fetch: Fetch) -> Any:
        cp_max, seq_max = fetch(sql.bounds)
        return work(*_stream(fetch, upto_seq=seq_max, upto_cp=cp_max, page=page))

    return await sql.read_in_thread(engines, in_thread)


async def log_size(engines: Engines) -> int:
    """The last seq of the store's log (0 when empty): the total for a progress bar."""
    return await sql.log_size(engines)
