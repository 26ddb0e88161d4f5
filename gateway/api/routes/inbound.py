"""`/v1/inbound/{counterpart}`: a counterpart's asynchronous callbacks, in its own wire format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from gateway.api import problems
from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import InboundResponse
from gateway.pipeline.inbound import receive_callback
from security.access import Principal

router = APIRouter(prefix="/v1/inbound", tags=["inbound"])
CALLBACK_COUNTERPARTS = ("con", "mio", "mtszn", "health")  # the adapters with decode_callback; probation sends none


@router.post(
    "/{counterpart}",
    status_code=202,
    response_model=InboundResponse,
    responses={**problems.responses("unknown-counterpart", "undecodable-wire-message", "message-id-conflict",
                                    "occurred-at-in-future"),
               503: {"content": {"text/xml": {"schema": {"type": "string"},
                                              "description": "ЦОН (/v1/inbound/con): a SOAP 1.1 Fault, faultcode "
                                                             "Server, with the problem's slug as its error code"}}}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {}, "application/fhir+json": {}, "text/xml": {}}}},
)
async def inbound(counterpart: Annotated[str, Path(description="the counterpart calling back (another name is "
                                                               "`unknown-counterpart`)",
                                                   json_schema_extra={"enum": list(CALLBACK_COUNTERPARTS)})],
                  request: Request, c: ContainerDep,
                  caller: Annotated[Principal, require("counterpart")]) -> InboundResponse:
    """Decode a callback, signed by the counterpart's pinned key, with its adapter and accept what it says.

    Each counterpart speaks its own wire format (`mio`, `mtszn`: JSON; `health`: FHIR R4 JSON; `con`: SOAP 1.1
    with an XML signature); a counterpart sends only its own callbacks (another path is 403); what its adapter
    cannot decode, or decodes into an invalid canonical message, is `undecodable-wire-message`."""
    accepted = await receive_callback(
        container=c, counterpart=counterpart, caller=caller, method=request.method, path=request.url.path,
        headers=tuple(request.headers.items()), body=request.state.verified_body, raw=request.state.raw_body,
    )
    return InboundResponse(accepted=[a.response for a in accepted])
