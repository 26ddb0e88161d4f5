"""A message's overall status and hop timeline, read from the store."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from gateway.canonical.errors import NotFound
from gateway.storage.store import Store


class DeliveryView(BaseModel):
    id: int
    counterpart: str
    instance: str | None
    state: Literal["pending", "in_flight", "delivered", "dead", "parked"]
    attempts: int
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int | None
    reason: str | None


class HopView(BaseModel):
    hop: Literal["received", "reply", "derived", "attempt"]
    peer: str
    attempt: int | None
    request_in_at: datetime | None
    request_out_at: datetime | None
    response_in_at: datetime | None
    response_out_at: datetime | None
    request_bytes: int | None
    response_bytes: int | None
    status_code: int | None
    result: str
    error: str | None


class MessageStatus(BaseModel):
    message_id: str
    type: str
    case_id: str
    occurred_at: datetime
    received_at: datetime
    source: str
    status: Literal["stored", "queued", "delivering", "retrying", "delivered", "parked", "dead_letter"]
    deliveries: list[DeliveryView]
    timeline: list[HopView]


def overall(states: list[str], attempts: list[int]) -> str:
    if not states:
        return "stored"
    if "dead" in states:
        return "dead_letter"
    if "parked" in states:
        return "parked"
    if all(s == "delivered" for s in states):
        return "delivered"
    if any(s == "pending" and a > 0 for s, a in zip(states, attempts)):
        return "retrying"
    return "delivering" if "in_flight" in states else "queued"


async def message_status(*, store: Store, message_id: str) -> MessageStatus:
    found = await store.message_status(message_id)
    if found is None:
        raise NotFound(f"no message {message_id}")
    dels = found["deliveries"]
    return MessageStatus(
        **found["message"],
        status=overall([d["state"] for d in dels], [d["attempts"] for d in dels]),
        deliveries=dels,
        timeline=found["hops"],
    )


class DeliveryItem(DeliveryView):
    message_id: str
    case_id: str
    type: str
    created_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryItem]
    next: int | None


async def list_deliveries(
    *, store: Store, state: str | None, counterpart: str | None, instance: str | None, after: int, limit: int
) -> DeliveryList:
    rows = await store.list_deliveries(state=state, counterpart=counterpart, instance=instance, after=after,
                                       limit=limit)
    return DeliveryList(items=rows, next=rows[-1]["id"] if len(rows) == limit else None)
