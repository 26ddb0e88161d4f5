"""`/v1/sla/...`: service levels measured from the gateway's own timestamps."""

from __future__ import annotations


from fastapi import APIRouter
from pydantic import AwareDatetime

from gateway.api.deps import ContainerDep
from gateway.pipeline.technical import TechnicalReport, technical_report

router = APIRouter(prefix="/v1/sla", tags=["sla"])


@router.get("/technical", response_model=TechnicalReport)
async def technical(c: ContainerDep, since: AwareDatetime | None = None,
                    until: AwareDatetime | None = None) -> TechnicalReport:
    """Per counterpart: p50/p95 time to acknowledge and to complete, attempts per delivery, dead-letter share."""
    return await technical_report(store=c.store, mappings=c.mappings, since=since, until=until)
