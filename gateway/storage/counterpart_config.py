"""Counterpart configuration versions (table counterpart_config): each one written with its audit hop, read back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from gateway.storage.store import Store
from gateway.storage.tables import counterpart_config

_C = counterpart_config.c
# (document, change, changed_by, at, audit): `audit` makes the hop from the version number the insert assigned
_Version = tuple[dict[str, Any], dict[str, Any], str, datetime, Callable[[int], dict[str, Any]]]


class CounterpartConfigStore:
    """The admin's port to the stored versions; writes go through the store's group commit."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, *, document: dict[str, Any], change: dict[str, Any], changed_by: str, at: datetime,
                     audit: Callable[[int], dict[str, Any]]) -> int:
        """The next version, and the hop `audit(version)` in the same transaction; returns the version."""
        return await self._store.committer.submit(self._insert, (document, change, changed_by, at, audit))

    def _insert(self, conn: Connection, items: list[_Version]) -> list[int]:
        out = []
        for document, change, by, now, audit in items:
            version = conn.execute(insert(counterpart_config).values(
                document=orjson.dumps(document).decode(), created_at=now, changed_by=by,
                change=orjson.dumps(change).decode()).returning(_C.version)).scalar_one()
            self._store.insert_exchanges(conn, [audit(version)])
            out.append(version)
        return out

    async def latest(self, *, known: int | None) -> tuple[int, dict[str, Any]] | None:
        """The newest version and its document; None when nothing is stored or the newest is `known`."""
        async with self._store.engines.read.connect() as conn:
            latest = (await conn.execute(select(func.max(_C.version)))).scalar()
            if latest is None or latest == known:
                return None
            document = (await conn.execute(select(_C.document).where(_C.version == latest))).scalar_one()
        return latest, orjson.loads(document)

    async def history(self, *, instance: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """Versions, newest first, with who, when and what changed (one instance's and whole imports, or all)."""
        query = select(_C.version, _C.created_at, _C.changed_by, _C.change).order_by(_C.version.desc()).limit(limit * 4)
        out = []
        async with self._store.engines.read.connect() as conn:
            for row in (await conn.execute(query)).all():
                change = orjson.loads(row.change)
                if instance is not None and change.get("instance") not in (instance, "*"):
                    continue
                out.append({"version": row.version, "created_at": _aware(row.created_at),
                            "changed_by": row.changed_by, "change": change})
                if len(out) == limit:
                    break
        return out

    async def version(self, *, version: int) -> dict[str, Any] | None:
        async with self._store.engines.read.connect() as conn:
            row = (await conn.execute(select(counterpart_config).where(_C.version == version))).first()
        if row is None:
            return None
        return {"version": row.version, "document": orjson.loads(row.document), "change": orjson.loads(row.change),
                "created_at": _aware(row.created_at), "changed_by": row.changed_by}


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands a UTC column back naive."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
