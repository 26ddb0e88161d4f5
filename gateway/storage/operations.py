"""Reads for administrators: backlog and health per instance, parked and dead deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from gateway.storage.db import Engines
from gateway.storage.tables import deliveries, exchanges, messages

_D = deliveries.c
_X = exchanges.c


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    counterpart: str | None = None
    instance: str | None = None
    reason_class: str | None = None  # the reason's first word: refused, timeout, http-503, ...
    since: datetime | None = None  # dead-lettered at or after
    until: datetime | None = None
    message_type: str | None = None


async def instance_backlog(engines: Engines) -> dict[str, dict[str, Any]]:
    """Per instance: deliveries waiting (pending, in flight), the oldest waiting one's creation, dead letters."""
    query = (select(_D.instance, _D.state, func.count(), func.min(_D.created_at))
             .where(_D.state.in_(("pending", "in_flight", "dead")), _D.instance.is_not(None))
             .group_by(_D.instance, _D.state))
    out: dict[str, dict[str, Any]] = {}
    async with engines.read.connect() as conn:
        for instance, state, count, oldest in (await conn.execute(query)).all():
            entry = out.setdefault(instance, {"pending": 0, "in_flight": 0, "dead": 0, "oldest_waiting_at": None})
            entry[state] = count
            if state != "dead" and oldest is not None:
                oldest = _aware(oldest)
                current = entry["oldest_waiting_at"]
                entry["oldest_waiting_at"] = oldest if current is None or oldest < current else current
    return out


async def last_attempts(engines: Engines, instances: list[str]) -> dict[str, dict[str, Any]]:
    """Per instance, the newest delivered attempt and the newest failed one (time, status, reason)."""
    out: dict[str, dict[str, Any]] = {}
    async with engines.read.connect() as conn:
        for name in instances:
            base = select(_X.response_in_at, _X.request_out_at, _X.status_code, _X.result, _X.error).where(
                _X.hop == "attempt", _X.peer == name)
            ok = (await conn.execute(base.where(_X.result == "delivered").order_by(_X.id.desc()).limit(1))).first()
            bad = (await conn.execute(base.where(_X.result != "delivered").order_by(_X.id.desc()).limit(1))).first()
            out[name] = {
                "last_success_at": _aware(ok.response_in_at) if ok else None,
                "last_failure_at": _aware(bad.response_in_at or bad.request_out_at) if bad else None,
                "last_failure_status": bad.status_code if bad else None,
                "last_failure_reason": bad.error if bad else None,
            }
    return out


async def parked_deliveries(engines: Engines, *, limit: int = 200) -> list[dict[str, Any]]:
    query = (select(_D.id, _D.message_id, _D.case_id, _D.counterpart, _D.created_at, _D.reason, messages.c.type)
             .join(messages, messages.c.message_id == _D.message_id)
             .where(_D.state == "parked").order_by(_D.id).limit(limit))
    async with engines.read.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


def _dead_query(f: DeadLetterFilter) -> Any:
    query = (select(_D.id, _D.message_id, _D.case_id, _D.counterpart, _D.instance, _D.attempts, _D.created_at,
                    _D.finished_at, _D.last_status, _D.reason, messages.c.type)
             .join(messages, messages.c.message_id == _D.message_id).where(_D.state == "dead"))
    if f.counterpart:
        query = query.where(_D.counterpart == f.counterpart)
    if f.instance:
        query = query.where(_D.instance == f.instance)
    if f.reason_class:
        # A class is a reason's prefix before its colon (REASON_CLASSES); `http` is every status answer.
        if f.reason_class == "http":
            query = query.where(_D.reason.like("counterpart answered%"))
        else:
            escaped = f.reason_class.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(_D.reason.like(f"{escaped}:%", escape="\\"))
    if f.since:
        query = query.where(_D.finished_at >= f.since)
    if f.until:
        query = query.where(_D.finished_at < f.until)
    if f.message_type:
        query = query.where(messages.c.type == f.message_type)
    return query


async def dead_letters(engines: Engines, *, filter: DeadLetterFilter, after: int = 0, limit: int = 100
                       ) -> list[dict[str, Any]]:
    query = _dead_query(filter).where(_D.id > after).order_by(_D.id).limit(limit)
    async with engines.read.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def dead_letter_ids(engines: Engines, *, filter: DeadLetterFilter, limit: int) -> list[int]:
    query = _dead_query(filter).with_only_columns(_D.id).order_by(_D.id).limit(limit)
    async with engines.read.connect() as conn:
        return [r[0] for r in (await conn.execute(query)).all()]


async def dead_letter_reasons(engines: Engines, *, classify: Any) -> list[str]:
    """The reason classes present among dead letters, as `classify` (pipeline.retry.reason_class) names them."""
    async with engines.read.connect() as conn:
        reasons = (await conn.execute(select(_D.reason).where(_D.state == "dead").distinct().limit(1000))).scalars()
        return sorted({classify(r) for r in reasons if r})


def _aware(value: datetime | None) -> datetime | None:
    """Aggregates over a UTC column come back naive from SQLite."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
