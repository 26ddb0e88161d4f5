"""Response bodies of the HTTP API (request bodies are the canonical messages)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

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
