"""`/v1/document-requests`: records about a person, fetched once and shared while valid."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Response

from gateway.api import problems
from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import DocumentRequestIn, DocumentRequestView
from security.access import Principal

router = APIRouter(prefix="/v1/document-requests", tags=["document-requests"])
Caller = Annotated[Principal, require("system")]


@router.post("", response_model=DocumentRequestView,
             responses={200: {"description": "A valid stored copy: the record, no upstream call",
                              "headers": {"Location": {"$ref": "#/components/headers/Location"}}},
                        202: {"model": DocumentRequestView,
                              "description": "Being fetched (or joined to the fetch already under way); poll the "
                                             "status_url, and the result is pushed to the Probation IS",
                              "headers": {"Location": {"$ref": "#/components/headers/Location"},
                                          "Retry-After": {"$ref": "#/components/headers/Retry-After"}}},
                        **problems.responses("no-instance")})
async def request_document(payload: DocumentRequestIn, c: ContainerDep, caller: Caller) -> Response:
    """Ask for a record; identical requests in flight share one upstream call, in every gateway process."""
    outcome = await c.documents.request(principal=caller, case_id=payload.case_id, record_kind=payload.record_kind,
                                        iin=payload.iin, purpose=payload.purpose)
    headers = {"Location": outcome.body["status_url"]}
    if outcome.status_code == 202:
        headers["Retry-After"] = "1"
    return Response(DocumentRequestView(**outcome.body).model_dump_json(exclude_none=True),
                    status_code=outcome.status_code, media_type="application/json", headers=headers)


@router.get("/{request_id}", response_model=DocumentRequestView, responses=problems.responses("not-found"))
async def get_document_request(request_id: uuid.UUID, c: ContainerDep, caller: Caller) -> DocumentRequestView:
    """The request's state and, once done, the record (only to the client that asked)."""
    return DocumentRequestView(**await c.documents.get(principal=caller, request_id=str(request_id)))
