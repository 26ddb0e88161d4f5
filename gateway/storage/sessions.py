"""Console session rows: created at sign-in, read per page, touched now and then, ended at sign-out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from gateway.storage.store import Store
from gateway.storage.tables import console_sessions

_S = console_sessions.c


@dataclass(frozen=True, slots=True)
class SessionRow:
    id_hash: str
    client_id: str
    csrf: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ended_at: datetime | None


class SessionStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, row: SessionRow) -> None:
        await self.store.committer.submit(self._create, row)

    @staticmethod
    def _create(conn: Connection, rows: list[SessionRow]) -> list[None]:
        # Sign-ins are rare: the expired rows go with them, so the table stays the size of who is signed in.
        conn.execute(delete(console_sessions).where(_S.expires_at < min(r.created_at for r in rows)))
        conn.execute(insert(console_sessions), [vars_of(r) for r in rows])
        return [None] * len(rows)

    async def get(self, id_hash: str) -> SessionRow | None:
        async with self.store.engines.read.connect() as conn:
            row = (await conn.execute(select(console_sessions).where(_S.id_hash == id_hash))).first()
        return None if row is None else SessionRow(**row._mapping)

    async def touch(self, *, id_hash: str, at: datetime) -> None:
        await self.store.committer.submit(self._touch, (id_hash, at))

    @staticmethod
    def _touch(conn: Connection, items: list[tuple[str, datetime]]) -> list[None]:
        for id_hash, at in items:
            conn.execute(update(console_sessions).where(_S.id_hash == id_hash, _S.ended_at.is_(None))
                         .values(last_seen_at=at))
        return [None] * len(items)

    async def end(self, *, id_hash: str, at: datetime) -> None:
        await self.store.committer.submit(self._end, (id_hash, at))

    @staticmethod
    def _end(conn: Connection, items: list[tuple[str, datetime]]) -> list[None]:
        for id_hash, at in items:
            conn.execute(update(console_sessions).where(_S.id_hash == id_hash, _S.ended_at.is_(None))
                         .values(ended_at=at))
        return [None] * len(items)


def vars_of(row: SessionRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in SessionRow.__slots__}
