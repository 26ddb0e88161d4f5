"""The store: every row the pipeline reads or writes goes through here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Callable, Collection, Iterable, Protocol

import orjson
from sqlalchemy import and_, bindparam, case, func, insert, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from gateway.pipeline.ports import ClaimedDelivery
from gateway.storage.batch import DEFERRED, UNDO, Committer
from gateway.storage import status_queries
from gateway.storage.db import Engines
from gateway.storage.hops import LOG_ONLY
from gateway.storage.personal import PersonSeal
from gateway.storage.tables import cases, deliveries, document_requests, exchanges, messages, referrals

FINAL_STATES = ("delivered", "dead")
# Messages the gateway makes that are not case events: kept out of the SLA engine and the events export.
NOT_EVENTS = ("document.ready", "alert.notification")


def dialect_insert(conn: Connection, table):  # noqa: ANN001, ANN202
    """INSERT with ON CONFLICT support for the connection's dialect (SQLite or PostgreSQL)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class ExchangeLogPort(Protocol):
    """The tamper-evident log (gateway.audit.log.ExchangeLog), written in the same transaction as each hop."""

    def append(self, conn: Connection, rows: list[dict[str, Any]], extras: list[dict[str, Any]]) -> None: ...


class Store:
    def __init__(self, engines: Engines, *, exchange_log: ExchangeLogPort | None = None,
                 personal: PersonSeal | None = None) -> None:
        self.engines = engines
        self.committer = Committer(engines)
        self.exchange_log = exchange_log
        if exchange_log is not None:
            self.committer.before_commit = self._append_log
        self.personal = personal

    def _open(self, content: bytes) -> bytes:
        return self.personal.reveal(content) if self.personal is not None else content

    # --- writes, always inside a transaction handed in by the caller; one statement per batch -----

    def insert_messages(self, conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert those whose message_id is new; returns the ids inserted."""
        if not rows:
            return set()
        if self.personal is not None:  # at rest the person is sealed; readers of this store get it back opened
            rows = [{**r, "content": self.personal.seal(r["content"])} for r in rows]
        stmt = (
            dialect_insert(conn, messages)
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(messages.c.message_id)
        )
        return set((conn.execute(stmt, rows)).scalars())

    @staticmethod
    def existing_messages(conn: Connection, message_ids: list[str]) -> dict[str, tuple[str, str]]:
        """message_id -> (content_hash, accept_response) for those already stored."""
        if not message_ids:
            return {}
        rows = conn.execute(
            select(messages.c.message_id, messages.c.content_hash, messages.c.accept_response).where(
                messages.c.message_id.in_(message_ids)
            )
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    @staticmethod
    def upsert_cases(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = dialect_insert(conn, cases)
        stmt = stmt.on_conflict_do_update(
            index_elements=["case_id"],
            set_={"region": stmt.excluded.region, "registered_message_id": stmt.excluded.registered_message_id},
        )
        conn.execute(stmt, rows)

    def case_registrations(self, conn: Connection, case_ids: set[str]) -> dict[str, tuple[str, bytes]]:
        """case_id -> (region, content of its case.registered) for the cases known."""
        if not case_ids:
            return {}
        rows = conn.execute(
            select(cases.c.case_id, cases.c.region, messages.c.content)
            .join(messages, messages.c.message_id == cases.c.registered_message_id)
            .where(cases.c.case_id.in_(case_ids))
        )
        return {r[0]: (r[1], self._open(r[2])) for r in rows}

    @staticmethod
    def insert_referrals(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            stmt = dialect_insert(conn, referrals).on_conflict_do_nothing(index_elements=["referral_id"])
            conn.execute(stmt, rows)

    @staticmethod
    def set_referral_statuses(conn: Connection, rows: list[dict[str, Any]]) -> None:
        """rows: {b_referral_id, status, updated_at}."""
        if rows:
            conn.execute(
                update(referrals).where(referrals.c.referral_id == bindparam("b_referral_id")), rows
            )

    @staticmethod
    def lock_referral_states(conn: Connection, referral_ids: set[str]) -> dict[str, tuple[str, str]]:
        """referral_id -> (case_id, status) of those known, locked until the transaction ends."""
        return status_queries.lock_referral_states(conn, referral_ids)

    @staticmethod
    def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert delivery rows; returns their ids in the order given."""
        if not rows:
            return []
        stmt = insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True)
        return list((conn.execute(stmt, rows)).scalars())

    @staticmethod
    def on_rollback(conn: Connection, undo: Callable[[], None]) -> None:
        """Run `undo` if this transaction does not commit (what a handler counted in memory is given back)."""
        conn.info[UNDO].append(undo)

    async def record_hop(self, row: dict[str, Any]) -> None:
        """One hop on its own (a refusal, a read, an auditor's action), written in the next group commit."""
        await self.committer.submit(self._insert_hops, row)

    def _insert_hops(self, conn: Connection, rows: list[dict[str, Any]]) -> list[None]:
        self.insert_exchanges(conn, rows)
        return [None] * len(rows)

    def insert_exchanges(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Hop rows for operations, and the same hops in the exchange log (keys in LOG_ONLY go only there)."""
        if not rows:
            return
        plain, extras = [], []
        for row in rows:
            extras.append({k: row[k] for k in LOG_ONLY if k in row})
            plain.append({k: v for k, v in row.items() if k not in LOG_ONLY})
        conn.execute(insert(exchanges), plain)
        if self.exchange_log is None:
            return
        deferred = conn.info.get(DEFERRED)
        if deferred is None:
            self.exchange_log.append(conn, plain, extras)
        else:  # a group commit: every handler's hops chained in one append at its end (one head read, one insert)
            deferred.append((plain, extras))

    def _append_log(self, conn: Connection, deferred: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
                    ) -> None:
        if deferred and self.exchange_log is not None:
            self.exchange_log.append(conn, [r for plain, _ in deferred for r in plain],
                                     [e for _, extras in deferred for e in extras])

    @staticmethod
    def parked_for_cases(conn: Connection, case_ids: set[str]) -> list[tuple[int, str, bytes]]:
        if not case_ids:
            return []
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.counterpart, messages.c.content)
            .join(messages, messages.c.message_id == deliveries.c.message_id)
            .where(deliveries.c.case_id.in_(case_ids), deliveries.c.state == "parked")
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @staticmethod
    def reroute(
        conn: Connection, delivery_id: int, *, instance: str | None, reason: str | None, now: datetime
    ) -> None:
        values: dict[str, Any] = {"instance": instance, "reason": reason}
        if instance is not None:
            values.update(state="pending", next_attempt_at=now)
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))

    @staticmethod
    def claim_owners(conn: Connection, delivery_ids: list[int]) -> dict[int, str | None]:
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.claimed_by).where(deliveries.c.id.in_(delivery_ids))
        )
        return dict(rows.all())

    @staticmethod
    def finish_attempts(conn: Connection, rows: list[dict[str, Any]]) -> None:
        """rows: {b_id, b_worker, state, next_attempt_at, finished_at, last_status, reason}.

        The claimed_by guard keeps a worker whose lease ran out from overwriting its successor."""
        if not rows:
            return
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == bindparam("b_id"), deliveries.c.claimed_by == bindparam("b_worker"))
            .values(lease_until=None, claimed_by=None),
            rows,
        )

    # --- claiming ----------------------------------------------------------------------------

    def claim_in(
        self, conn: Connection, *, worker: str, now: datetime, limit: int, lease: timedelta,
        exclude: Iterable[str] = (), only: Iterable[str] = (), ids: Iterable[int] = (),
    ) -> list[ClaimedDelivery]:
        """Take up to `limit` due deliveries; safe with several processes on PostgreSQL (SKIP LOCKED).

        With `ids`, only those, and a pending one even before its next attempt time (a breaker's probe)."""
        if limit <= 0:
            return []
        chosen = list(ids)
        due = or_(
            and_(deliveries.c.state == "pending",
                 deliveries.c.id.in_(chosen) if chosen else deliveries.c.next_attempt_at <= now),
            # A claim whose worker died (lease ran out) is due again.
            and_(deliveries.c.state == "in_flight", deliveries.c.lease_until < now),
        )
        if chosen:
            due = and_(due, deliveries.c.id.in_(chosen))
        pick = select(deliveries.c.id).where(due)
        excluded = list(exclude)
        if excluded:
            pick = pick.where(deliveries.c.instance.not_in(excluded))
        wanted = list(only)
        if wanted:
            pick = pick.where(deliveries.c.instance.in_(wanted))
        pick = pick.order_by(deliveries.c.next_attempt_at).limit(limit).with_for_update(skip_locked=True)
        stmt = (
            update(deliveries)
            .where(deliveries.c.id.in_(pick.scalar_subquery()))
            .values(
                state="in_flight",
                claimed_by=worker,
                lease_until=now + lease,
                attempts=deliveries.c.attempts + 1,
                first_attempt_at=func.coalesce(deliveries.c.first_attempt_at, now),
            )
            .returning(
                deliveries.c.id,
                deliveries.c.message_id,
                deliveries.c.counterpart,
                deliveries.c.instance,
                deliveries.c.attempts,
                deliveries.c.first_attempt_at,
                deliveries.c.case_id,
                deliveries.c.attempt_base,
            )
        )
        claimed = (conn.execute(stmt)).all()
        if not claimed:
            return []
        contents = dict(
            (
                conn.execute(
                    select(messages.c.message_id, messages.c.content).where(
                        messages.c.message_id.in_([r.message_id for r in claimed])
                    )
                )
            ).all()
        )
        registrations = self.case_registrations(conn, {r.case_id for r in claimed})
        return [
            ClaimedDelivery(r.id, r.message_id, r.counterpart, r.instance, r.attempts, r.first_attempt_at,
                            contents[r.message_id], registrations.get(r.case_id, (None, None))[1], r.attempt_base)
            for r in claimed
        ]

    @staticmethod
    def release_claims(conn: Connection, delivery_ids: list[int], *, worker: str, now: datetime) -> None:
        """Hand back claims whose attempts were cut short (shutdown): due again at once, for any worker."""
        if delivery_ids:
            conn.execute(update(deliveries)
                         .where(deliveries.c.id.in_(delivery_ids), deliveries.c.claimed_by == worker,
                                deliveries.c.state == "in_flight")
                         .values(state="pending", claimed_by=None, lease_until=None, next_attempt_at=now))

    async def next_due(self) -> datetime | None:
        async with self.engines.read.connect() as conn:
            return (
                await conn.execute(
                    select(func.min(deliveries.c.next_attempt_at)).where(deliveries.c.state == "pending")
                )
            ).scalar()

    # --- reads -------------------------------------------------------------------------------

    async def message_status(self, message_id: str) -> dict[str, Any] | None:
        async with self.engines.read.connect() as conn:
            msg = (
                await conn.execute(
                    select(
                        messages.c.message_id,
                        messages.c.type,
                        messages.c.case_id,
                        messages.c.occurred_at,
                        messages.c.received_at,
                        messages.c.source,
                    ).where(messages.c.message_id == message_id)
                )
            ).first()
            if msg is None:
                return None
            dels = (
                await conn.execute(
                    select(deliveries).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id)
                )
            ).mappings().all()
            hops = (
                await conn.execute(
                    select(exchanges).where(exchanges.c.message_id == message_id).order_by(exchanges.c.id)
                )
            ).mappings().all()
        return {"message": dict(msg._mapping), "deliveries": [dict(d) for d in dels], "hops": [dict(h) for h in hops]}

    async def list_deliveries(
        self, *, state: str | None, counterpart: str | None, instance: str | None, after: int, limit: int
    ) -> list[dict[str, Any]]:
        query = (
            select(deliveries.c.id, deliveries.c.message_id, deliveries.c.case_id, deliveries.c.counterpart,
                   deliveries.c.instance, deliveries.c.state, deliveries.c.attempts, deliveries.c.next_attempt_at,
                   deliveries.c.created_at, deliveries.c.finished_at, deliveries.c.last_status, deliveries.c.reason,
                   messages.c.type)
            .join(messages, messages.c.message_id == deliveries.c.message_id)
            .where(deliveries.c.id > after)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        if state:
            query = query.where(deliveries.c.state == state)
        if counterpart:
            query = query.where(deliveries.c.counterpart == counterpart)
        if instance:
            query = query.where(deliveries.c.instance == instance)
        async with self.engines.read.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def iter_messages(
        self, *, until: datetime | None = None, since: datetime | None = None, case_id: str | None = None,
        batch: int = 5000,
    ) -> AsyncIterator[tuple[bytes, datetime]]:
        """Every stored business event (content, received_at) in acceptance order, read in pages; optionally
        one case's, or those received in [since, until].

        Document results (`document.ready`) are left out: they carry a person's records, not case events; so are
        the gateway's alert notifications (`alert.notification`).
        """
        after = 0
        while True:
            query = (select(messages.c.id, messages.c.content, messages.c.received_at)
                     .where(messages.c.id > after, messages.c.type.not_in(NOT_EVENTS))
                     .order_by(messages.c.id).limit(batch))
            if until is not None:
                query = query.where(messages.c.received_at <= until)
            if since is not None:
                query = query.where(messages.c.received_at >= since)
            if case_id is not None:
                query = query.where(messages.c.case_id == case_id)
            async with self.engines.read.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield self._open(row[1]), row[2]
            if len(rows) < batch:
                return
            after = rows[-1][0]

    async def messages_after(
        self, *, after: int, also: Collection[int] = (), batch: int = 5000,
    ) -> AsyncIterator[tuple[int, bytes | None, datetime]]:
        """(row id, content, received_at) of every message with a row id above `after` or in `also` (first),
        in row id order; content None for a document result (not a case event, as in iter_messages).

        For a reader that keeps what it read and comes back only for what is new (the live SLA report)."""
        content = case((messages.c.type.in_(NOT_EVENTS), null()), else_=messages.c.content)
        base = select(messages.c.id, content, messages.c.received_at)
        async with self.engines.read.connect() as conn:
            if also:
                for row in (await conn.execute(base.where(messages.c.id.in_(list(also)))
                                               .order_by(messages.c.id))).all():
                    yield row[0], None if row[1] is None else self._open(row[1]), row[2]
        while True:
            async with self.engines.read.connect() as conn:
                rows = (await conn.execute(base.where(messages.c.id > after).order_by(messages.c.id)
                                           .limit(batch))).all()
            for row in rows:
                yield row[0], None if row[1] is None else self._open(row[1]), row[2]
            if len(rows) < batch:
                return
            after = rows[-1][0]

    async def technical_rows(
        self, *, since: datetime | None, until: datetime | None
    ) -> tuple[list[tuple[str, str, int, datetime, datetime | None, bool]], dict[str, list[float]]]:
        """Deliveries to counterparts with their acceptance and acknowledgement times, and referral
        completion durations (seconds) per referral kind, for messages accepted in the period."""
        ack = (
            select(exchanges.c.delivery_id, func.max(exchanges.c.response_in_at).label("at"))
            .where(exchanges.c.hop == "attempt", exchanges.c.result == "delivered")
            .group_by(exchanges.c.delivery_id)
            .subquery()
        )
        # A dead letter replayed and then delivered still gave up once: its attempts say so.
        gave_up = (
            select(exchanges.c.delivery_id, func.count().label("times"))
            .where(exchanges.c.hop == "attempt", exchanges.c.result == "dead")
            .group_by(exchanges.c.delivery_id)
            .subquery()
        )
        query = (
            select(deliveries.c.counterpart, deliveries.c.state, deliveries.c.attempts, messages.c.received_at,
                   ack.c.at, gave_up.c.times.is_not(None))
            .join(messages, messages.c.message_id == deliveries.c.message_id)
            .outerjoin(ack, ack.c.delivery_id == deliveries.c.id)
            .outerjoin(gave_up, gave_up.c.delivery_id == deliveries.c.id)
            .where(deliveries.c.counterpart.not_in(("probation", "webhook")))
        )
        requested = select(referrals.c.referral_id, referrals.c.kind, messages.c.received_at).join(
            messages, messages.c.message_id == referrals.c.request_message_id)
        if since is not None:
            query = query.where(messages.c.received_at >= since)
            requested = requested.where(messages.c.received_at >= since)
        if until is not None:
            query = query.where(messages.c.received_at <= until)
            requested = requested.where(messages.c.received_at <= until)
        completed = select(messages.c.content, messages.c.received_at).where(messages.c.type == "referral.completed")
        async with self.engines.read.connect() as conn:
            rows = [tuple(r) for r in (await conn.execute(query)).all()]
            asked = {r[0]: (r[1], r[2]) for r in (await conn.execute(requested)).all()}
            done = (await conn.execute(completed)).all()
        durations: dict[str, list[float]] = {}
        for content, received_at in done:
            referral_id = orjson.loads(content)["body"]["referral_id"]
            if referral_id in asked:
                kind, started = asked[referral_id]
                durations.setdefault(kind, []).append(
                    (received_at - started).total_seconds())
        return rows, durations  # type: ignore[return-value]

    async def latest_message_row(self) -> int | None:
        """The newest message's row id: it changes whenever a message is accepted."""
        async with self.engines.read.connect() as conn:
            return (await conn.execute(select(func.max(messages.c.id)))).scalar()

    async def case_timeline(self, case_id: str) -> list[dict[str, Any]]:
        """The case's messages in business-time order: id, type, occurred_at, received_at, source."""
        query = (select(messages.c.message_id, messages.c.type, messages.c.occurred_at, messages.c.received_at,
                        messages.c.source)
                 .where(messages.c.case_id == case_id).order_by(messages.c.occurred_at, messages.c.id))
        async with self.engines.read.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]

    async def case_activity(self, case_id: str) -> dict[str, list[dict[str, Any]]]:
        """Everything stored about one case, for the case view: its messages (content opened), their
        deliveries and hops, its referrals and its document requests (never the person's IIN or records)."""
        msgs = (select(messages.c.id, messages.c.message_id, messages.c.type, messages.c.occurred_at,
                       messages.c.received_at, messages.c.source, messages.c.content)
                .where(messages.c.case_id == case_id).order_by(messages.c.occurred_at, messages.c.id))
        dels = (select(deliveries.c.id, deliveries.c.message_id, deliveries.c.counterpart, deliveries.c.instance,
                       deliveries.c.state, deliveries.c.attempts, deliveries.c.created_at, deliveries.c.finished_at,
                       deliveries.c.last_status, deliveries.c.reason)
                .where(deliveries.c.case_id == case_id).order_by(deliveries.c.id))
        hops = (select(exchanges.c.message_id, exchanges.c.delivery_id, exchanges.c.hop, exchanges.c.peer,
                       exchanges.c.attempt, exchanges.c.request_in_at, exchanges.c.request_out_at,
                       exchanges.c.response_in_at, exchanges.c.response_out_at, exchanges.c.status_code,
                       exchanges.c.result, exchanges.c.error)
                .where(exchanges.c.message_id.in_(select(messages.c.message_id)
                                                  .where(messages.c.case_id == case_id)))
                .order_by(exchanges.c.id))
        refs = select(referrals).where(referrals.c.case_id == case_id).order_by(referrals.c.referral_id)
        docs = (select(document_requests.c.request_id, document_requests.c.record_kind, document_requests.c.instance,
                       document_requests.c.state, document_requests.c.served_from, document_requests.c.created_at,
                       document_requests.c.completed_at, document_requests.c.client_id)
                .where(document_requests.c.case_id == case_id).order_by(document_requests.c.created_at))
        async with self.engines.read.connect() as conn:
            found = {
                "messages": [dict(r) for r in (await conn.execute(msgs)).mappings()],
                "deliveries": [dict(r) for r in (await conn.execute(dels)).mappings()],
                "hops": [dict(r) for r in (await conn.execute(hops)).mappings()],
                "referrals": [dict(r) for r in (await conn.execute(refs)).mappings()],
                "documents": [dict(r) for r in (await conn.execute(docs)).mappings()],
            }
        for row in found["messages"]:
            row["content"] = self._open(row["content"])
        return found
