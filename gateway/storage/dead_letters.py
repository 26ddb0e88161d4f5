"""Dead letters for administrators: listed, read with their attempts, requeued with an audit hop in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from gateway.storage.store import Store
from gateway.storage.tables import deliveries, exchanges, messages

_D = deliveries.c
_X = exchanges.c


@dataclass(frozen=True, slots=True)
class Candidate:
    """A delivery as a replay finds it."""

    id: int
    state: str
    instance: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Move:
    """One delivery back to pending: its next attempt and the reason it now carries."""

    delivery_id: int
    next_attempt_at: datetime
    reason: str


class Requeue:
    """One transaction of a replay: what it reads, moves and logs commits together or not at all."""

    def __init__(self, conn: Connection, store: Store) -> None:
        self._conn = conn
        self._store = store

    def candidates(self, *, ids: Collection[int]) -> list[Candidate]:
        """Those of `ids` that exist, in id order."""
        rows = self._conn.execute(select(_D.id, _D.state, _D.instance, _D.reason)
                                  .where(_D.id.in_(ids)).order_by(_D.id)).all()
        return [Candidate(r.id, r.state, r.instance, r.reason) for r in rows]

    def candidate(self, *, delivery_id: int) -> Candidate | None:
        row = self._conn.execute(select(_D.state, _D.reason, _D.instance).where(_D.id == delivery_id)).first()
        return None if row is None else Candidate(delivery_id, row.state, row.instance, row.reason)

    def move(self, move: Move) -> int:
        """The delivery back to pending if it is still dead; 1 when it moved, 0 when not."""
        # The attempt numbering goes on (the log keeps every attempt); the retry policy counts from attempt_base.
        return self._conn.execute(
            update(deliveries).where(_D.id == move.delivery_id, _D.state == "dead")
            .values(state="pending", attempt_base=_D.attempts, first_attempt_at=None,
                    next_attempt_at=move.next_attempt_at, finished_at=None, lease_until=None, claimed_by=None,
                    reason=move.reason[:4000])).rowcount

    def move_all(self, moves: list[Move]) -> int:
        """Every delivery back to pending, or none (another replay may have taken some meanwhile); how many
        were still dead: fewer than `moves` means nothing moved."""
        nested = self._conn.begin_nested()
        moved = sum(self.move(m) for m in moves)
        if moved != len(moves):
            nested.rollback()
        else:
            nested.commit()
        return moved

    def audit(self, *, hop: dict[str, Any]) -> None:
        self._store.insert_exchanges(self._conn, [hop])


class DeadLetterStore:
    """The admin's port to dead deliveries; requeues run in the store's group commit."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def page(self, *, after: int, limit: int) -> list[dict[str, Any]]:
        return await self._store.list_deliveries(state="dead", counterpart=None, instance=None, after=after,
                                                 limit=limit)

    async def detail(self, *, delivery_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The delivery with its message's type, source and arrival, and its attempts in order."""
        async with self._store.engines.read.connect() as conn:
            row = (await conn.execute(
                select(deliveries, messages.c.type, messages.c.source, messages.c.received_at)
                .join(messages, messages.c.message_id == _D.message_id)
                .where(_D.id == delivery_id))).mappings().first()
            if row is None:
                return None
            attempts = (await conn.execute(
                select(_X.attempt, _X.request_out_at, _X.response_in_at, _X.status_code, _X.result, _X.error)
                .where(_X.delivery_id == delivery_id, _X.hop == "attempt")
                .order_by(_X.id))).mappings().all()
        return dict(row), [dict(a) for a in attempts]

    async def requeue(self, work: Callable[[Requeue], Any]) -> Any:
        """`work` run in a write transaction; what it returns (an exception: raised here) is the answer."""
        return await self._store.committer.submit(self._run, work)

    def _run(self, conn: Connection, works: list[Callable[[Requeue], Any]]) -> list[Any]:
        tx = Requeue(conn, self._store)
        return [work(tx) for work in works]
