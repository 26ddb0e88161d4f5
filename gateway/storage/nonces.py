"""The nonce store in the database: one table for every gateway process, so a replay is caught by any."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import bindparam, delete
from sqlalchemy.engine import Connection

from gateway.wire import Clock
from gateway.storage.store import Store, dialect_insert
from gateway.storage.tables import UTCDateTime, nonces

PURGE_EVERY_S = 5.0


class SqlNonceStore:
    """`NonceStore` (security/httpsig.py) on the store; the primary key makes check-and-record atomic."""

    def __init__(self, *, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._next_purge = 0.0
        self._insert: dict[str, object] = {}

    async def seen_or_add(self, nonce: str, *, keyid: str, expires_at: datetime) -> bool:
        return await self.store.committer.submit(self._record, (keyid, nonce, expires_at))

    def _statement(self, conn: Connection):  # noqa: ANN202
        # Built once per dialect: one cached compiled form, sent for a whole batch (insertmanyvalues).
        name = conn.dialect.name
        if name not in self._insert:
            insert = dialect_insert(conn, nonces)
            # A pair whose record has expired (not purged yet) is taken over: returned as new, like a fresh insert.
            self._insert[name] = insert.on_conflict_do_update(
                index_elements=["keyid", "nonce"], set_={"expires_at": insert.excluded.expires_at},
                where=nonces.c.expires_at <= bindparam("now", type_=UTCDateTime),
            ).returning(nonces.c.keyid, nonces.c.nonce)
        return self._insert[name]

    def _record(self, conn: Connection, items: list[tuple[str, str, datetime]]) -> list[bool]:
        now = self.clock()
        if time.monotonic() >= self._next_purge:
            # An expired pair may be reused: its signature can no longer verify anyway.
            conn.execute(delete(nonces).where(nonces.c.expires_at <= now))
            self._next_purge = time.monotonic() + PURGE_EVERY_S
        # A pair twice in one batch is a replay of its first occurrence. A pair whose keep-until has passed by now
        # (verification or this batch waited too long) is refused: its record could no longer stop a replay.
        first: dict[tuple[str, str], int] = {}
        rows = []
        for i, (keyid, nonce, expires_at) in enumerate(items):
            if expires_at <= now:
                continue
            if (keyid, nonce) not in first:
                first[(keyid, nonce)] = i
                rows.append({"keyid": keyid, "nonce": nonce, "expires_at": expires_at, "now": now})
        inserted = {(r.keyid, r.nonce) for r in conn.execute(self._statement(conn), rows)} if rows else set()
        return [first.get((keyid, nonce)) != i or (keyid, nonce) not in inserted
                for i, (keyid, nonce, _) in enumerate(items)]
