"""Bodies of the HTTP API besides the canonical messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.canonical.messages import IIN, Id, RecordKind, Text

from gateway.pipeline.status import DeliveryView, HopView, MessageStatus  # noqa: F401  (re-exported)


# Cursors, ids and counts are 64-bit: a larger number is refused as a 422 at the boundary, never a 500 in the store.
MAX_INT64 = 2**63 - 1
Cursor = Annotated[int, Field(ge=0, le=MAX_INT64)]
RowId = Annotated[int, Field(ge=1, le=MAX_INT64)]


class AcceptedResponse(BaseModel):
    message_id: str
    status: Literal["accepted"]
    received_at: datetime
    status_url: str


class InboundResponse(BaseModel):
    accepted: list[AcceptedResponse]


class ProblemItem(BaseModel):
    pointer: str = Field(description="JSON Pointer into the request: /body/..., /query/<name>, /path/<name>")
    detail: str = Field(description="what is wrong there (never the submitted value: it may be personal data)")


class Problem(BaseModel):
    """RFC 9457 problem details; `type` is stable (`urn:probation-gateway:problem:<slug>`), `detail` is for people."""

    model_config = ConfigDict(extra="allow", title="Problem")
    type: str = Field(pattern=r"^urn:probation-gateway:problem:[a-z0-9-]+$")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(None, description="the path of the request")
    errors: list[ProblemItem] | None = Field(None, description="invalid-message and invalid-configuration: each "
                                                               "value refused, where and why")
    reason: str | None = Field(None, description="store-unavailable: what failed (connection refused, disk full…)")


class DocumentRequestIn(BaseModel):
    """A record about a person, asked for one case; the same record is fetched once and shared while valid."""

    model_config = ConfigDict(extra="forbid")
    case_id: Id
    record_kind: RecordKind
    iin: IIN
    purpose: Text = Field(description="why the record is needed; kept with the request for the auditors")


class DocumentRequestView(BaseModel):
    request_id: str
    case_id: str
    record_kind: RecordKind
    instance: str
    state: Literal["pending", "done", "failed"]
    status_url: str
    created_at: datetime
    completed_at: datetime | None = None
    served_from: Literal["store", "upstream"] | None = None
    status: Literal["found", "not_found"] | None = None
    record: dict[str, Any] | None = None
    as_of: datetime | None = None
    fetched_at: datetime | None = None
    valid_until: datetime | None = None
    reason: str | None = None
