"""Operations: liveness, readiness (store reachable, schema current) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import ContainerDep
from gateway.storage.db import current_revision, head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: store unreachable or schema behind"}})
async def readyz(c: ContainerDep, response: Response) -> dict[str, str]:
    """Ready to take traffic: the store answers and its schema is at the newest migration."""
    try:
        current = await current_revision(c.engines)
    except Exception as exc:  # noqa: BLE001
        response.status_code = 503
        return {"status": "unavailable", "detail": f"store unreachable: {type(exc).__name__}"}
    head = head_revision()
    if current != head:
        response.status_code = 503
        return {"status": "unavailable", "detail": f"schema at {current}, code expects {head}"}
    return {"status": "ready", "schema": str(current)}


@router.get("/metrics", response_class=Response)
async def metrics(c: ContainerDep) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)
