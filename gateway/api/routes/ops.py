"""Operations: liveness, readiness (store reachable, schema current, loops up) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import ContainerDep
from gateway.storage.db import current_revision, head_revision
from gateway.storage.faults import outage_reason

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: store unreachable, schema behind, or a "
                                                     "background loop down (each loop's state in `loops`)"}})
async def readyz(c: ContainerDep, response: Response) -> dict[str, Any]:
    """Ready to take traffic: the store answers, its schema is at the newest migration, and every background
    loop this process runs (committer, delivery worker, escalations, checkpoints, config polling, document
    sweeper) is up; `loops` gives each one's state, last success and consecutive failures."""
    loops = {loop.name: loop.snapshot() for loop in c.loops}
    down = sorted(name for name, loop in zip(loops, c.loops) if loop.required and not loop.healthy)
    try:
        current = await current_revision(c.engines)
    except Exception as exc:  # noqa: BLE001
        response.status_code = 503
        reason = outage_reason(exc) or type(exc).__name__
        return {"status": "unavailable", "detail": f"store unreachable: {reason}", "loops": loops}
    head = head_revision()
    if current != head:
        response.status_code = 503
        return {"status": "unavailable", "detail": f"schema at {current}, code expects {head}", "loops": loops}
    if down:
        response.status_code = 503
        return {"status": "unavailable", "detail": f"background loops down: {', '.join(down)}", "loops": loops}
    return {"status": "ready", "schema": str(current), "loops": loops}


@router.get("/metrics", response_class=Response)
async def metrics(c: ContainerDep) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)
