"""`/v1/messages`: the Probation IS submits canonical messages and follows them hop by hop."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Request, Response

from gateway.api import problems
from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import AcceptedResponse, MessageStatus
from gateway.canonical.messages import CanonicalMessage
from gateway.pipeline.status import message_status
from security.access import Principal

router = APIRouter(prefix="/v1/messages", tags=["messages"])
PROBLEMS = {**problems.responses("unknown-message-type", "message-id-conflict", "occurred-at-in-future",
                                 "reply-contradicts-referral"),
            202: {"description": "Stored, routed and queued", "headers": {"Location": {"$ref": "#/components/headers/Location"}}}}


@router.post("", status_code=202, response_model=AcceptedResponse, responses=PROBLEMS)
async def submit(message: Annotated[CanonicalMessage, Body()], request: Request, c: ContainerDep,
                 caller: Annotated[Principal, require("system")]) -> Response:
    """Store and queue a canonical message; the same message sent again gets the same answer.

    Rules the schema cannot state alone: `type` selects the body's schema; `occurred_at` is at most 5 minutes
    ahead of the gateway's clock (`occurred-at-in-future`) and not before 2000-01-01; a `message_id` already
    accepted with other content is `message-id-conflict` (the same content gets the first answer again). A
    refused message stores nothing: no message, case, referral or delivery."""
    raw = request.state.raw_body
    result = await c.accepter.accept(message=message, source="probation", request_bytes=len(raw), raw=raw,
                                     client=caller.client_id, signer=caller.keyid)
    return Response(orjson.dumps(result.response), status_code=202, media_type="application/json",
                    headers={"Location": result.response["status_url"]})


@router.get("/{message_id}", response_model=MessageStatus, responses=problems.responses("not-found"),
            dependencies=[require("system", "auditor", "admin")])
async def status(message_id: uuid.UUID, c: ContainerDep) -> MessageStatus:
    """Status of a message and the timeline of every hop it made."""
    return await message_status(store=c.store, message_id=str(message_id), status_url=c.accepter.status_url)
