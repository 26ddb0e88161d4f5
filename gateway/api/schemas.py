"""Bodies of the HTTP API besides the canonical messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.canonical.messages import IIN, Id, RecordKind, Text

from gateway.pipeline.status import DeliveryView, HopView, MessageStatus  # noqa: F401  (re-exported)


class AcceptedResponse(BaseModel):
    message_id: str
    status: Literal["accepted"]
    received_at: datetime
    status_url: str


class InboundResponse(BaseModel):
    accepted: list[AcceptedResponse]


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


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
