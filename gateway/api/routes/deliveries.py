"""`/v1/deliveries`: the outbox as administrators see it (parked and dead-lettered work above all)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import MAX_INT64
from gateway.canonical.messages import Id
from gateway.pipeline.status import DeliveryList, list_deliveries

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], dependencies=[require("admin", "auditor")])


@router.get("", response_model=DeliveryList)
async def deliveries(
    c: ContainerDep,
    state: Literal["pending", "in_flight", "delivered", "dead", "parked"] | None = None,
    counterpart: Id | None = None,
    instance: Id | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_INT64, description="cursor: the `next` of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    """Deliveries in id order, filtered; a parked one says why in `reason`."""
    return await list_deliveries(store=c.store, state=state, counterpart=counterpart, instance=instance,
                                 after=after, limit=limit)
