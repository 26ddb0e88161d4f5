"""`/v1/admin`: counterpart instances changed live (with a dry run), dead letters inspected and replayed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from gateway.api import problems
from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import MAX_INT64
from security.access import Principal

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[Principal, require("admin")]
Instance = Annotated[dict[str, Any], Body(description="a counterpart instance as in the counterparts file "
                                                      "(name, counterpart, regions, role, base_url, timeout_s, "
                                                      "max_in_flight, enabled, retry, breaker, keys, revoked_keys, "
                                                      "require_signatures, log_bodies)")]
DryRun = Annotated[bool, Query(description="validate and show the change and the wire message a sample "
                                           "canonical message would become; apply nothing")]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_INT64, description="the delivery's id")]
CHANGE_PROBLEMS = problems.responses("not-found", "invalid-configuration")


@router.get("/counterparts")
async def list_counterparts(c: ContainerDep, _: Admin) -> dict[str, Any]:
    """Every instance as applied now, and the configuration version (null: the file loaded at start-up)."""
    return c.admin.current()


@router.get("/counterparts/{name}", responses=problems.responses("not-found"))
async def get_counterpart(name: str, c: ContainerDep, _: Admin) -> dict[str, Any]:
    return c.admin.instance(name)


@router.put("/counterparts/{name}", responses=problems.responses("invalid-configuration"),
            openapi_extra={"requestBody": {"content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/CounterpartInstance"}}}}})
async def put_counterpart(name: str, document: Instance, c: ContainerDep, caller: Admin,
                          dry_run: DryRun = False) -> dict[str, Any]:
    """Create or replace an instance; applied at once in this process and within seconds in every other.

    Rules beyond the schema: the body's `name`, when given, is the path's; an instance with
    `require_signatures` pins at least one key; a pinned key is a readable file or an inline PEM or JWK; the
    whole counterparts configuration must stay valid (`invalid-configuration` names each field, nothing is
    applied)."""
    return await c.admin.put(name=name, document=document, principal=caller, dry_run=dry_run)


@router.patch("/counterparts/{name}", responses=CHANGE_PROBLEMS,
              openapi_extra={"requestBody": {"content": {
                  "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/CounterpartInstancePatch"}},
                  "application/json": {"schema": {"$ref": "#/components/schemas/CounterpartInstancePatch"}}}}})
async def patch_counterpart(name: str, patch: Instance, c: ContainerDep, caller: Admin,
                            dry_run: DryRun = False) -> dict[str, Any]:
    """Change some fields (RFC 7396 merge patch: null removes a field, restoring its default)."""
    return await c.admin.patch(name=name, patch=patch, principal=caller, dry_run=dry_run)


@router.get("/dead-letters")
async def dead_letters(c: ContainerDep, _: Admin,
                       after: Annotated[int, Query(ge=0, le=MAX_INT64, description="cursor: the `next_after` of the "
                                                                               "previous page")] = 0,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    items = await c.admin.dead_letters(after=after, limit=limit)
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


@router.get("/dead-letters/{delivery_id}", responses=problems.responses("not-found"))
async def dead_letter(delivery_id: DeliveryId, c: ContainerDep, _: Admin) -> dict[str, Any]:
    """A dead letter, its message's metadata (not its personal data) and every attempt."""
    return await c.admin.dead_letter(delivery_id)


@router.post("/dead-letters/{delivery_id}/replay", responses=problems.responses("not-found", "not-dead-lettered"))
async def replay(delivery_id: DeliveryId, c: ContainerDep, caller: Admin) -> dict[str, Any]:
    """Queue a dead letter again, from its first attempt, under the instance's current policy."""
    return await c.admin.replay(delivery_id=delivery_id, principal=caller)
