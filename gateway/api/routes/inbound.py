"""`/v1/inbound/{counterpart}`: a counterpart's asynchronous callbacks, in its own wire format."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.api.deps import ContainerDep
from gateway.api.schemas import InboundResponse, Problem
from gateway.pipeline.inbound import receive_callback

router = APIRouter(prefix="/v1/inbound", tags=["inbound"])


@router.post(
    "/{counterpart}",
    status_code=202,
    response_model=InboundResponse,
    responses={404: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {}, "application/fhir+json": {}, "text/xml": {}}}},
)
async def inbound(counterpart: str, request: Request, c: ContainerDep) -> InboundResponse:
    """Decode a callback with the counterpart's adapter and accept what it says, like any message."""
    body = await request.body()
    accepted = await receive_callback(
        container=c, counterpart=counterpart, method=request.method, path=request.url.path,
        headers=tuple(request.headers.items()), body=body,
    )
    return InboundResponse(accepted=[a.response for a in accepted])
