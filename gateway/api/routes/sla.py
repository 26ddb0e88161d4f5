"""`/v1/sla/...`: domain SLA compliance and KPIs, and technical service levels, from message timestamps."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from gateway.api import problems
from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.canonical.errors import NotFound
from gateway.canonical.messages import TIMESTAMP_RULE, Id, Region, Timestamp
from gateway.pipeline.technical import TechnicalReport, technical_report
from gateway.sla.live import live_case_report, live_report

router = APIRouter(prefix="/v1/sla", tags=["sla"], dependencies=[require("system", "auditor", "admin")])
AsOf = Annotated[Timestamp | None, Query(description="the report's time (default: now): " + TIMESTAMP_RULE)]
Since = Annotated[Timestamp | None, Query(description="legs started at or after: " + TIMESTAMP_RULE)]
Until = Annotated[Timestamp | None, Query(description="legs started before: " + TIMESTAMP_RULE)]
Filter = Annotated[Id | None, Query()]
REPORT_DOC = {"200": {"content": {"application/json": {}, "text/csv": {}},
                      "description": "BRIEF 5 report (JSON), or its legs as CSV with `Accept: text/csv`"}}


@router.get("/report", responses=REPORT_DOC)  # type: ignore[dict-item]
async def report(
    request: Request, c: ContainerDep, as_of: AsOf = None, since: Since = None, until: Until = None,
    rule: Filter = None, counterpart: Filter = None, region: Annotated[Region | None, Query()] = None,
) -> Response:
    """Legs, per-rule summary and KPIs as of `as_of` (default now); filters select legs by their start."""
    result = await live_report(store=c.store, config=c.sla, as_of=as_of or c.clock(), rule=rule,
                               counterpart=counterpart, region=region, since=since, until=until)
    if "text/csv" in request.headers.get("accept", ""):
        return StreamingResponse(iter(list(result.iter_csv())), media_type="text/csv; charset=utf-8")
    return Response(result.to_json(), media_type="application/json")


@router.get("/cases/{case_id}", responses=problems.responses("not-found"))
async def case_legs(case_id: Id, c: ContainerDep, as_of: AsOf = None) -> dict[str, Any]:
    """Every leg of one case, with the case's message timeline."""
    result = (await live_case_report(store=c.store, config=c.sla, case_id=case_id, as_of=as_of or c.clock())).to_dict()
    legs = [leg for leg in result["legs"] if leg["case_id"] == case_id]
    timeline = await c.store.case_timeline(case_id)
    if not legs and not timeline:
        raise NotFound(f"no case {case_id}")
    return {"as_of": result["as_of"], "case_id": case_id, "legs": legs, "timeline": timeline}


@router.get("/breaches")
async def breaches(c: ContainerDep, as_of: AsOf = None) -> dict[str, Any]:
    """Legs breached (stopped late) or overdue (not stopped, deadline passed) as of `as_of`."""
    result = await live_report(store=c.store, config=c.sla, as_of=as_of or c.clock())
    return {"as_of": result.as_of_text, "legs": result.legs_where(("breached", "overdue"))}


@router.get("/technical", response_model=TechnicalReport)
async def technical(c: ContainerDep,
                    since: Annotated[Timestamp | None, Query(description="hops at or after: " + TIMESTAMP_RULE)] = None,
                    until: Annotated[Timestamp | None, Query(description="hops before: " + TIMESTAMP_RULE)] = None
                    ) -> TechnicalReport:
    """Per counterpart: p50/p95 time to acknowledge and to complete, attempts per delivery, dead-letter share."""
    return await technical_report(store=c.store, mappings=c.mappings, since=since, until=until)
