"""The clients table: add, list and revoke clients, and a snapshot for the authenticator."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from datetime import datetime

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.canonical.errors import GatewayError, NotFound
from gateway.storage.store import Store
from gateway.storage.tables import clients


class ClientConflict(GatewayError):
    slug = "client-conflict"
    status = 409
    title = "A client with this name or key already exists"


@dataclass(frozen=True, slots=True)
class ClientRow:
    client_id: str
    roles: frozenset[str]
    keyid: str | None
    public_key: str | None
    token_hash: str | None
    description: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = None

    def public(self) -> dict[str, object]:
        """What `gateway clients list` shows: never the token hash."""
        return {"client_id": self.client_id, "roles": sorted(self.roles), "keyid": self.keyid,
                "auth": "signature" if self.keyid else "token", "description": self.description,
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None}


def _row(r) -> ClientRow:  # noqa: ANN001
    return ClientRow(r.client_id, frozenset(r.roles.split()), r.keyid, r.public_key, r.token_hash, r.description,
                     r.created_at, r.revoked_at, getattr(r, "last_used_at", None))


class ClientStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, *, client_id: str, roles: frozenset[str], now: datetime, keyid: str | None = None,
                  public_key: str | None = None, token_hash: str | None = None,
                  description: str | None = None) -> ClientRow:
        values = {"client_id": client_id, "roles": " ".join(sorted(roles)), "keyid": keyid,
                  "public_key": public_key, "token_hash": token_hash, "description": description,
                  "created_at": now, "revoked_at": None}
        return await self.store.committer.submit(self._add, values)

    @staticmethod
    def _add(conn: Connection, items: list[dict]) -> list:
        out: list = []
        for values in items:
            nested = conn.begin_nested()
            try:
                conn.execute(insert(clients).values(**values))
                nested.commit()
                out.append(_row(SimpleNamespace(**values)))
            except IntegrityError:
                nested.rollback()
                out.append(ClientConflict(f"client {values['client_id']!r} or its key is already registered"))
        return out

    async def revoke(self, *, client_id: str, now: datetime) -> ClientRow:
        found = await self.store.committer.submit(self._revoke, (client_id, now))
        if found is None:
            raise NotFound(f"no client {client_id!r}")
        return found

    @staticmethod
    def _revoke(conn: Connection, items: list[tuple[str, datetime]]) -> list:
        out = []
        for client_id, now in items:
            conn.execute(update(clients).where(clients.c.client_id == client_id, clients.c.revoked_at.is_(None))
                         .values(revoked_at=now))
            row = conn.execute(select(clients).where(clients.c.client_id == client_id)).first()
            out.append(_row(row) if row is not None else None)
        return out

    async def mark_used(self, uses: dict[str, datetime]) -> None:
        await self.store.committer.submit(self._mark_used, uses)

    @staticmethod
    def _mark_used(conn: Connection, items: list[dict[str, datetime]]) -> list[None]:
        for uses in items:
            for client_id, at in uses.items():
                conn.execute(update(clients).where(clients.c.client_id == client_id,
                                                   or_(clients.c.last_used_at.is_(None), clients.c.last_used_at < at))
                             .values(last_used_at=at))
        return [None] * len(items)

    async def all(self) -> list[ClientRow]:
        async with self.store.engines.read.connect() as conn:
            rows = (await conn.execute(select(clients).order_by(clients.c.client_id))).all()
        return [_row(r) for r in rows]
