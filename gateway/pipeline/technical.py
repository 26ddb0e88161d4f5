"""Technical SLAs from the gateway's own hop timestamps, per counterpart (as X-Road's monitoring keeps)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from statistics import quantiles

from pydantic import BaseModel

from gateway.mapping import Mappings


class CounterpartFigures(BaseModel):
    counterpart: str
    deliveries: int
    delivered: int
    dead: int
    pending: int
    dead_letter_share: float | None
    attempts_per_delivery: float | None
    ack_p50_seconds: float | None
    ack_p95_seconds: float | None
    complete_p50_seconds: float | None
    complete_p95_seconds: float | None


class TechnicalReport(BaseModel):
    since: datetime | None
    until: datetime | None
    counterparts: list[CounterpartFigures]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    counterpart: str
    state: str
    attempts: int
    accepted_at: datetime  # when the gateway accepted the message
    acknowledged_at: datetime | None  # when the counterpart answered the successful attempt
    dead_lettered: bool = False  # gave up at least once (and was maybe replayed since)


def _p(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


def figures(deliveries: list[DeliveryRow], completions: dict[str, list[float]]) -> list[CounterpartFigures]:
    """Pure: per counterpart, shares and percentiles; `completions` are referral durations in seconds."""
    by: dict[str, list[DeliveryRow]] = {}
    for row in deliveries:
        by.setdefault(row.counterpart, []).append(row)
    out = []
    for counterpart in sorted(set(by) | set(completions)):
        rows = by.get(counterpart, [])
        delivered = [r for r in rows if r.state == "delivered"]
        dead_now = sum(1 for r in rows if r.state == "dead")
        finished = len(delivered) + dead_now
        dead = sum(1 for r in rows if r.state == "dead" or r.dead_lettered)  # a replay does not erase a failure
        acks = sorted((r.acknowledged_at - r.accepted_at).total_seconds() for r in delivered if r.acknowledged_at)
        done = sorted(completions.get(counterpart, []))
        out.append(CounterpartFigures(
            counterpart=counterpart,
            deliveries=len(rows),
            delivered=len(delivered),
            dead=dead,
            pending=len(rows) - finished,
            dead_letter_share=dead / finished if finished else None,
            attempts_per_delivery=sum(r.attempts for r in delivered) / len(delivered) if delivered else None,
            ack_p50_seconds=_p(acks, 50),
            ack_p95_seconds=_p(acks, 95),
            complete_p50_seconds=_p(done, 50),
            complete_p95_seconds=_p(done, 95),
        ))
    return out


class TechnicalRows(Protocol):
    """The store's deliveries with their acceptance and acknowledgement times (Store.technical_rows)."""

    async def technical_rows(
        self, *, since: datetime | None, until: datetime | None
    ) -> tuple[list[tuple[str, str, int, datetime, datetime | None, bool]], dict[str, list[float]]]: ...


async def technical_report(
    *, store: TechnicalRows, mappings: Mappings, since: datetime | None, until: datetime | None
) -> TechnicalReport:
    rows, by_kind = await store.technical_rows(since=since, until=until)
    completions: dict[str, list[float]] = {}
    for kind, seconds in by_kind.items():
        entry = mappings.kinds.kinds.get(kind)  # type: ignore[call-overload]
        completions.setdefault(entry.counterpart if entry else kind, []).extend(seconds)
    return TechnicalReport(since=since, until=until, counterparts=figures(
        [DeliveryRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows], completions))
