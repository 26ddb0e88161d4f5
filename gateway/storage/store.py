"""The store: every row the pipeline reads or writes goes through here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.storage.batch import Committer
from gateway.storage.db import Engines
from gateway.storage.tables import cases, deliveries, exchanges, messages, referrals

FINAL_STATES = ("delivered", "dead")


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    message_id: str
    counterpart: str
    instance: str
    attempts: int  # including the one now claimed
    first_attempt_at: datetime | None
    content: bytes


def _insert(conn: AsyncConnection, table):  # noqa: ANN001, ANN202
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class Store:
    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self.committer = Committer(engines.write)

    # --- writes, always inside a transaction handed in by the caller -------------------------

    @staticmethod
    async def insert_message(conn: AsyncConnection, row: dict[str, Any]) -> bool:
        """Insert unless the message_id exists; True when inserted."""
        stmt = _insert(conn, messages).values(**row).on_conflict_do_nothing(index_elements=["message_id"])
        result = await conn.execute(stmt.returning(messages.c.id))
        return result.first() is not None

    @staticmethod
    async def existing_message(conn: AsyncConnection, message_id: str) -> tuple[str, str] | None:
        row = (
            await conn.execute(
                select(messages.c.content_hash, messages.c.accept_response).where(messages.c.message_id == message_id)
            )
        ).first()
        return (row[0], row[1]) if row else None

    @staticmethod
    async def upsert_case(conn: AsyncConnection, *, case_id: str, region: str, message_id: str) -> None:
        stmt = _insert(conn, cases).values(case_id=case_id, region=region, registered_message_id=message_id)
        stmt = stmt.on_conflict_do_update(
            index_elements=["case_id"], set_={"region": region, "registered_message_id": message_id}
        )
        await conn.execute(stmt)

    @staticmethod
    async def case_region(conn: AsyncConnection, case_id: str) -> str | None:
        return (await conn.execute(select(cases.c.region).where(cases.c.case_id == case_id))).scalar()

    @staticmethod
    async def insert_referral(conn: AsyncConnection, row: dict[str, Any]) -> None:
        await conn.execute(_insert(conn, referrals).values(**row).on_conflict_do_nothing(index_elements=["referral_id"]))

    @staticmethod
    async def set_referral_status(conn: AsyncConnection, *, referral_id: str, status: str, at: datetime) -> None:
        await conn.execute(
            update(referrals).where(referrals.c.referral_id == referral_id).values(status=status, updated_at=at)
        )

    @staticmethod
    async def insert_deliveries(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if rows:
            await conn.execute(insert(deliveries), rows)

    @staticmethod
    async def insert_exchange(conn: AsyncConnection, row: dict[str, Any]) -> None:
        await conn.execute(insert(exchanges).values(**row))

    @staticmethod
    async def parked_for_case(conn: AsyncConnection, case_id: str) -> list[tuple[int, str, bytes]]:
        rows = await conn.execute(
            select(deliveries.c.id, deliveries.c.counterpart, messages.c.content)
            .join(messages, messages.c.message_id == deliveries.c.message_id)
            .where(deliveries.c.case_id == case_id, deliveries.c.state == "parked")
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @staticmethod
    async def reroute(
        conn: AsyncConnection, delivery_id: int, *, instance: str | None, reason: str | None, now: datetime
    ) -> None:
        values: dict[str, Any] = {"instance": instance, "reason": reason}
        if instance is not None:
            values.update(state="pending", next_attempt_at=now)
        await conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))

    @staticmethod
    async def finish_attempt(
        conn: AsyncConnection,
        delivery_id: int,
        *,
        worker: str,
        state: str,
        now: datetime,
        next_attempt_at: datetime | None,
        status: int | None,
        reason: str | None,
    ) -> bool:
        """Record an attempt's end; False when the claim was lost (another worker took over)."""
        values: dict[str, Any] = {
            "state": state,
            "last_status": status,
            "reason": reason,
            "lease_until": None,
            "claimed_by": None,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if state in FINAL_STATES:
            values["finished_at"] = now
        result = await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.claimed_by == worker)
            .values(**values)
        )
        return result.rowcount == 1

    # --- claiming ----------------------------------------------------------------------------

    async def claim(
        self, *, worker: str, now: datetime, limit: int, lease: timedelta, exclude: Iterable[str] = ()
    ) -> list[ClaimedDelivery]:
        """Take up to `limit` due deliveries for this worker; safe with several processes on PostgreSQL."""
        if limit <= 0:
            return []
        due = or_(
            and_(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now),
            # A claim whose worker died (lease ran out) is due again.
            and_(deliveries.c.state == "in_flight", deliveries.c.lease_until < now),
        )
        pick = select(deliveries.c.id).where(due)
        excluded = list(exclude)
        if excluded:
            pick = pick.where(deliveries.c.instance.not_in(excluded))
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
            )
        )
        async with self.engines.write.begin() as conn:
            claimed = (await conn.execute(stmt)).all()
            if not claimed:
                return []
            contents = dict(
                (
                    await conn.execute(
                        select(messages.c.message_id, messages.c.content).where(
                            messages.c.message_id.in_([r.message_id for r in claimed])
                        )
                    )
                ).all()
            )
        return [
            ClaimedDelivery(r.id, r.message_id, r.counterpart, r.instance, r.attempts, r.first_attempt_at,
                            contents[r.message_id])
            for r in claimed
        ]

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

    async def delivery_counts(self) -> dict[str, int]:
        async with self.engines.read.connect() as conn:
            rows = await conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state))
            return {state: n for state, n in rows}
