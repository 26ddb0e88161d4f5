"""The nonce store in the database: one table for every gateway process, so a replay is caught by any."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from gateway.pipeline.ports import Clock
from gateway.storage.store import Store, dialect_insert
from gateway.storage.tables import nonces


class SqlNonceStore:
    """`NonceStore` (security/httpsig.py) on the store; the primary key makes check-and-record atomic."""

    def __init__(self, *, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def seen_or_add(self, nonce: str, *, keyid: str, expires_at: datetime) -> bool:
        return await self.store.committer.submit(self._record, (keyid, nonce, expires_at))

    def _record(self, conn: Connection, items: list[tuple[str, str, datetime]]) -> list[bool]:
        now = self.clock()
        # An expired pair may be reused: its signature can no longer verify anyway.
        conn.execute(delete(nonces).where(nonces.c.expires_at <= now))
        out = []
        for keyid, nonce, expires_at in items:
            stmt = dialect_insert(conn, nonces).values(keyid=keyid, nonce=nonce, expires_at=expires_at)
            inserted = conn.execute(stmt.on_conflict_do_nothing(index_elements=["keyid", "nonce"])
                                    .returning(nonces.c.nonce)).first()
            out.append(inserted is None)
        return out
