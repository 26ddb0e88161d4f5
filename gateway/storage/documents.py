"""Document requests, stored records and flights (one upstream call per record key at a time) in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, select, update
from sqlalchemy.engine import Connection

from gateway.storage.db import Engines
from gateway.storage.store import dialect_insert
from gateway.storage.tables import document_requests, flights, records


@dataclass(frozen=True, slots=True)
class RecordKey:
    record_kind: str
    subject: str  # keyed hash of the IIN
    instance: str


@dataclass(frozen=True, slots=True)
class FlightRetry:
    """Where a flight's retry policy stands: attempts made, when the first was, when the next is due."""

    attempts: int = 0
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FlightJoin:
    """Who leads the key's flight after a request joined it, how many wait, and where its retries stand."""

    leader: str
    waiters: int
    retry: FlightRetry = FlightRetry()


@dataclass(frozen=True, slots=True)
class StaleFlight:
    key: RecordKey
    leader: str
    retry: FlightRetry


def _where(table: Any, key: RecordKey) -> Any:
    return and_(table.c.record_kind == key.record_kind, table.c.subject == key.subject,
                table.c.instance == key.instance)


def _case(condition: Any, then: Any, otherwise: Any) -> Any:
    return case((condition, then), else_=otherwise)


class DocumentStore:
    """Every statement of the document-request flow; writes take the group commit's transaction."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    # --- reads on their own connection ---------------------------------------------------------

    async def valid_record(self, key: RecordKey, now: datetime) -> Any:
        async with self.engines.read.connect() as conn:
            return (await conn.execute(select(records).where(_where(records, key), records.c.expires_at > now))
                    ).first()

    async def request_with_record(self, request_id: str) -> tuple[Any, Any]:
        """The request row and, once it is done, its record row (either may be None)."""
        async with self.engines.read.connect() as conn:
            req = (await conn.execute(select(document_requests)
                                      .where(document_requests.c.request_id == request_id))).first()
            record = None
            if req is not None and req.record_id is not None:
                record = (await conn.execute(select(records).where(records.c.id == req.record_id))).first()
        return req, record

    async def stale_flights(self, now: datetime) -> list[StaleFlight]:
        async with self.engines.read.connect() as conn:
            rows = (await conn.execute(select(flights).where(flights.c.lease_until < now))).all()
        return [StaleFlight(RecordKey(r.record_kind, r.subject, r.instance), r.leader,
                            FlightRetry(r.attempts, r.first_attempt_at, r.next_attempt_at)) for r in rows]

    # --- inside a write transaction ------------------------------------------------------------

    @staticmethod
    def insert_requests(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(document_requests.insert(), rows)

    @staticmethod
    def valid_record_in(conn: Connection, key: RecordKey, now: datetime) -> Any:
        return conn.execute(select(records).where(_where(records, key), records.c.expires_at > now)).first()

    @staticmethod
    def join_flight(conn: Connection, key: RecordKey, *, leader: str, now: datetime, lease_until: datetime
                    ) -> FlightJoin:
        """Lead the key's flight (a new key, or a lease run out: a crashed leader, whose retry state a new
        leader counts on from), or join it. The row lock also orders us against a leader landing its result."""
        stmt = dialect_insert(conn, flights).values(
            record_kind=key.record_kind, subject=key.subject, instance=key.instance, leader=leader,
            lease_until=lease_until, started_at=now, waiters=0)
        taken = flights.c.lease_until < now
        stmt = stmt.on_conflict_do_update(
            index_elements=["record_kind", "subject", "instance"],
            set_={"leader": _case(taken, leader, flights.c.leader),
                  "lease_until": _case(taken, lease_until, flights.c.lease_until),
                  "waiters": flights.c.waiters + 1},
        ).returning(flights.c.leader, flights.c.waiters, flights.c.attempts, flights.c.first_attempt_at,
                    flights.c.next_attempt_at)
        row = conn.execute(stmt).one()
        return FlightJoin(row.leader, row.waiters, FlightRetry(row.attempts or 0, row.first_attempt_at,
                                                               row.next_attempt_at))

    @staticmethod
    def drop_flight(conn: Connection, key: RecordKey, *, leader: str) -> bool:
        """End the flight if `leader` still leads it (taking its row lock); False when another took it over."""
        return conn.execute(delete(flights).where(_where(flights, key), flights.c.leader == leader)).rowcount == 1

    @staticmethod
    def mark_served(conn: Connection, request_id: str, *, record_id: int, now: datetime) -> None:
        conn.execute(update(document_requests).where(document_requests.c.request_id == request_id)
                     .values(state="done", record_id=record_id, served_from="store", completed_at=now))

    @staticmethod
    def put_record(conn: Connection, key: RecordKey, values: dict[str, Any]) -> int:
        """Store (or replace) the key's record; its id."""
        stmt = dialect_insert(conn, records).values(record_kind=key.record_kind, subject=key.subject,
                                                    instance=key.instance, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["record_kind", "subject", "instance"], set_=values))
        return conn.execute(select(records.c.id).where(_where(records, key))).scalar_one()

    @staticmethod
    def resolve_waiting(conn: Connection, key: RecordKey, *, state: str, record_id: int | None, now: datetime,
                        error: str | None) -> list[Any]:
        """Every pending request of the key, resolved; their (request_id, case_id, client_id, created_at)."""
        return conn.execute(
            update(document_requests)
            .where(_where(document_requests, key), document_requests.c.state == "pending")
            .values(state=state, record_id=record_id, served_from="upstream" if record_id else None,
                    completed_at=now, error=error)
            .returning(document_requests.c.request_id, document_requests.c.case_id,
                       document_requests.c.client_id, document_requests.c.created_at)
        ).all()

    @staticmethod
    def renew(conn: Connection, key: RecordKey, *, leader: str, until: datetime) -> None:
        conn.execute(update(flights).where(_where(flights, key), flights.c.leader == leader)
                     .values(lease_until=until))

    @staticmethod
    def retry_later(conn: Connection, key: RecordKey, *, leader: str, retry: FlightRetry) -> bool:
        """Keep the flight's retry state; False when `leader` no longer leads it."""
        return conn.execute(update(flights).where(_where(flights, key), flights.c.leader == leader)
                            .values(attempts=retry.attempts, first_attempt_at=retry.first_attempt_at,
                                    next_attempt_at=retry.next_attempt_at)).rowcount == 1

    @staticmethod
    def take_over(conn: Connection, key: RecordKey, *, old: str, new: str, now: datetime,
                  lease_until: datetime) -> Any:
        """Lead a flight whose lease ran out; a pending request's (iin, purpose) to ask with, or None (another
        process took it first, or nobody waits any more: then the flight ends)."""
        moved = conn.execute(update(flights).where(_where(flights, key), flights.c.leader == old,
                                                   flights.c.lease_until < now)
                             .values(leader=new, lease_until=lease_until)).rowcount
        if not moved:
            return None
        pending = conn.execute(select(document_requests.c.iin, document_requests.c.purpose)
                               .where(_where(document_requests, key), document_requests.c.state == "pending")
                               .limit(1)).first()
        if pending is None:
            conn.execute(delete(flights).where(_where(flights, key), flights.c.leader == new))
        return pending
