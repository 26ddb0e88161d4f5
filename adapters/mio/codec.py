"""Pure codec between canonical messages and МИО's REST/JSON referral API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from gateway.canonical.errors import WireDecodeError
from gateway.canonical.messages import AnyMessage, parse_message
from gateway.mapping import Instance, Mappings
from gateway.pipeline.ports import (
    DecodeContext,
    EncodeContext,
    SignatureChannel,
    WireRequest,
    WireResponse,
    derived_message_id,
)

REFERRALS_PATH = "/api/v1/referrals"
ESCALATIONS_PATH = "/api/v1/escalations"


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WireDecodeError("expected a JSON object")
    return value


def _field(doc: dict[str, Any], name: str) -> Any:
    if name not in doc or doc[name] in (None, ""):
        raise WireDecodeError(f"missing field {name!r}")
    return doc[name]


class MioAdapter:
    counterpart = "mio"
    signature_channel: SignatureChannel = "http"

    def encode(
        self, message: AnyMessage, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest:
        headers = (("content-type", "application/json"), ("x-message-id", str(message.message_id)))
        if message.type == "referral.requested":
            doc = {
                "requestId": str(message.message_id),
                "referralId": message.body.referral_id,
                "service": mappings.table("mio.service").external(message.body.kind),
                "caseRef": message.case_id,
                "riskRef": message.body.risk_id,
                "requestedAt": _iso(message.occurred_at),
                "details": message.body.details or {},
            }
            return WireRequest("POST", REFERRALS_PATH, headers, orjson.dumps(doc))
        if message.type == "escalation.raised":
            doc = {
                "requestId": str(message.message_id),
                "caseRef": message.case_id,
                "referralId": message.body.referral_id,
                "rule": message.body.rule,
                "deadlineAt": _iso(message.body.deadline_at),
                "reason": message.body.reason,
                "raisedAt": _iso(message.occurred_at),
            }
            return WireRequest("POST", ESCALATIONS_PATH, headers, orjson.dumps(doc))
        raise WireDecodeError(f"МИО takes no {message.type} messages")

    def decode_response(
        self, response: WireResponse, *, mappings: Mappings, request: AnyMessage, context: DecodeContext
    ) -> list[AnyMessage]:
        doc = _json(response.body)
        if request.type != "referral.requested":
            return []
        status = _field(doc, "status")
        if doc.get("requestId") not in (None, str(request.message_id)):
            raise WireDecodeError("reply names another requestId")
        base = {
            "case_id": request.case_id,
            "occurred_at": doc.get("decidedAt") or context.received_at.isoformat(),
        }
        referral_id = request.body.referral_id
        kind = mappings.table("mio.status").canonical(status)
        body: dict[str, Any] = {"referral_id": referral_id}
        if kind == "referral.rejected":
            body["reason"] = _field(doc, "reason")
        return [parse_message({**base, "message_id": str(derived_message_id(request.message_id, kind)),
                               "type": kind, "body": body})]

    def decode_callback(self, request: WireRequest, *, mappings: Mappings, context: DecodeContext) -> list[AnyMessage]:
        doc = _json(request.body)
        event = _field(doc, "event")
        base = {
            "message_id": _field(doc, "eventId"),
            "case_id": _field(doc, "caseRef"),
            "occurred_at": _field(doc, "occurredAt"),
        }
        kind = mappings.table("mio.event").canonical(event)
        body: dict[str, Any] = {"referral_id": _field(doc, "referralId")}
        if kind == "referral.rejected":
            body["reason"] = _field(doc, "reason")
        elif doc.get("outcome"):
            body["outcome"] = doc["outcome"]
        return [parse_message({**base, "type": kind, "body": body})]
