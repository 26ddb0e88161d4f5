"""Idempotency-Key records: the first response to (client, key) is kept and replayed for its lifetime."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, select, update
from sqlalchemy.engine import Connection

from gateway.storage.store import Store, dialect_insert
from gateway.storage.tables import idempotency_keys


@dataclass(frozen=True, slots=True)
class Begun:
    """`new`: go on and finish(); `replay`: the stored response; `mismatch`: other body; `in_flight`: wait."""

    outcome: str
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None


# Longer than any request may take (body limit, timeouts): an in-flight key older than this was left behind.
IN_FLIGHT_MAX = timedelta(seconds=120)


class IdempotencyStore:
    def __init__(self, store: Store, *, ttl: timedelta) -> None:
        self.store = store
        self.ttl = ttl

    async def begin(self, *, client_id: str, key: str, request_hash: str, now: datetime) -> Begun:
        return await self.store.committer.submit(self._begin, (client_id, key, request_hash, now))

    def _begin(self, conn: Connection, items: list[tuple[str, str, str, datetime]]) -> list[Begun]:
        out = []
        if items:
            conn.execute(delete(idempotency_keys).where(idempotency_keys.c.expires_at < items[0][3]))
        for client_id, key, request_hash, now in items:
            stmt = dialect_insert(conn, idempotency_keys).values(
                client_id=client_id, key=key, request_hash=request_hash, state="in_flight", created_at=now,
                expires_at=now + self.ttl)
            inserted = conn.execute(stmt.on_conflict_do_nothing(index_elements=["client_id", "key"])
                                    .returning(idempotency_keys.c.key)).first()
            if inserted is not None:
                out.append(Begun("new"))
                continue
            row = conn.execute(select(idempotency_keys).where(_key(client_id, key))).one()
            if row.state != "done" and row.created_at < now - IN_FLIGHT_MAX:
                # Its request ended without finish() or abandon() (a crash, or the store went away before the
                # key could be forgotten): nothing was answered for it, so this request starts afresh.
                conn.execute(update(idempotency_keys).where(_key(client_id, key))
                             .values(request_hash=request_hash, created_at=now, expires_at=now + self.ttl))
                out.append(Begun("new"))
            elif row.request_hash != request_hash:
                out.append(Begun("mismatch"))
            elif row.state != "done":
                out.append(Begun("in_flight"))
            else:
                out.append(Begun("replay", row.status, json.loads(row.headers or "{}"), row.body))
        return out

    async def finish(self, *, client_id: str, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        await self.store.committer.submit(self._finish, (client_id, key, status, headers, body))

    @staticmethod
    def _finish(conn: Connection, items: list[tuple[str, str, int, dict[str, str], bytes]]) -> list[None]:
        for client_id, key, status, headers, body in items:
            conn.execute(update(idempotency_keys).where(_key(client_id, key))
                         .values(state="done", status=status, headers=json.dumps(headers), body=body))
        return [None] * len(items)

    async def abandon(self, *, client_id: str, key: str) -> None:
        """Forget a key whose request failed on our side (5xx): the client may try it again."""
        await self.store.committer.submit(self._abandon, (client_id, key))

    @staticmethod
    def _abandon(conn: Connection, items: list[tuple[str, str]]) -> list[None]:
        for client_id, key in items:
            conn.execute(delete(idempotency_keys).where(_key(client_id, key), idempotency_keys.c.state == "in_flight"))
        return [None] * len(items)


def _key(client_id: str, key: str):  # noqa: ANN202
    return and_(idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key)
