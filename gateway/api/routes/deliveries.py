"""`/v1/deliveries`: the outbox as administrators see it (parked and dead-lettered work above all)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from gateway.api.auth import AUTH_PROBLEMS, require
from gateway.api.deps import ContainerDep
from gateway.pipeline.status import DeliveryList, list_deliveries

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], dependencies=[require("admin", "auditor")],
                   responses=AUTH_PROBLEMS)


@router.get("", response_model=DeliveryList)
async def deliveries(
    c: ContainerDep,
    state: Literal["pending", "in_flight", "delivered", "dead", "parked"] | None = None,
    counterpart: str | None = None,
    instance: str | None = None,
    after: int = Query(0, ge=0, description="cursor: the `next` of the previous page"),
    limit: int = Query(100, ge=1, le=1000),
) -> DeliveryList:
    """Deliveries in id order, filtered; a parked one says why in `reason`."""
    return await list_deliveries(store=c.store, state=state, counterpart=counterpart, instance=instance,
                                 after=after, limit=limit)
