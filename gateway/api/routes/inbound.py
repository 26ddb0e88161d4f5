"""`/v1/inbound/{counterpart}`: a counterpart's asynchronous callbacks, in its own wire format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from gateway.api.auth import AUTH_PROBLEMS, require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import InboundResponse, Problem
from gateway.pipeline.inbound import receive_callback
from security.access import Principal

router = APIRouter(prefix="/v1/inbound", tags=["inbound"], responses=AUTH_PROBLEMS)


@router.post(
    "/{counterpart}",
    status_code=202,
    response_model=InboundResponse,
    responses={404: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {}, "application/fhir+json": {}, "text/xml": {}}}},
)
async def inbound(counterpart: str, request: Request, c: ContainerDep,
                  caller: Annotated[Principal, require("counterpart")]) -> InboundResponse:
    """Decode a callback, signed by the counterpart's pinned key, with its adapter and accept what it says."""
    accepted = await receive_callback(
        container=c, counterpart=counterpart, caller=caller, method=request.method, path=request.url.path,
        headers=tuple(request.headers.items()), body=request.state.verified_body, raw=request.state.raw_body,
    )
    return InboundResponse(accepted=[a.response for a in accepted])
