"""`/v1/messages`: the Probation IS submits canonical messages and follows them hop by hop."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Request, Response

from gateway.api.auth import AUTH_PROBLEMS, require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import AcceptedResponse, MessageStatus, Problem
from gateway.canonical.messages import CanonicalMessage
from gateway.pipeline.status import message_status
from security.access import Principal

router = APIRouter(prefix="/v1/messages", tags=["messages"], responses=AUTH_PROBLEMS)
PROBLEMS = {
    400: {"model": Problem, "description": "Malformed JSON"},
    409: {"model": Problem, "description": "reply-contradicts-referral: a reply the referral's state rules out"},
    413: {"model": Problem, "description": "Body too large"},
    422: {"model": Problem, "description": "Invalid message, or a message_id reused for other content"},
}


@router.post("", status_code=202, response_model=AcceptedResponse, responses=PROBLEMS)
async def submit(message: Annotated[CanonicalMessage, Body()], request: Request, c: ContainerDep,
                 caller: Annotated[Principal, require("system")]) -> Response:
    """Store and queue a canonical message; the same message sent again gets the same answer."""
    raw = request.state.raw_body
    result = await c.accepter.accept(message=message, source="probation", request_bytes=len(raw), raw=raw,
                                     client=caller.client_id, signer=caller.keyid)
    return Response(orjson.dumps(result.response), status_code=202, media_type="application/json",
                    headers={"Location": result.response["status_url"]})


@router.get("/{message_id}", response_model=MessageStatus, responses={404: {"model": Problem}},
            dependencies=[require("system", "auditor", "admin")])
async def status(message_id: uuid.UUID, c: ContainerDep) -> MessageStatus:
    """Status of a message and the timeline of every hop it made."""
    return await message_status(store=c.store, message_id=str(message_id), status_url=c.accepter.status_url)
