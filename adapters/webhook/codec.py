"""Pure codec: an `alert.notification` as the JSON body POSTed to an alert webhook channel."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.canonical.errors import WireDecodeError
from gateway.canonical.messages import AlertNotification, AnyMessage
from gateway.mapping import Instance, Mappings
from gateway.pipeline.ports import DecodeContext, EncodeContext, SignatureChannel, WireRequest, WireResponse

SCHEMA = "urn:probation-gateway:alert-notification:v1"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def notification_document(message: AlertNotification) -> dict[str, Any]:
    """What a receiver reads: one rule's grouped changes, each alert with its state and count."""
    body = message.body
    return {
        "schema": SCHEMA,
        "notification_id": str(message.message_id),
        "rule": body.rule,
        "created_at": _iso(message.occurred_at),
        "count": body.count,
        "alerts": [
            {"alert_id": a.alert_id, "subject": a.subject, "state": a.state, "severity": a.severity,
             "summary": a.summary, "count": a.count, "started_at": _iso(a.started_at),
             "resolved_at": _iso(a.resolved_at)}
            for a in body.alerts
        ],
    }


class WebhookAdapter:
    counterpart = "webhook"
    signature_channel: SignatureChannel = "http"

    def encode(self, message: AnyMessage, *, mappings: Mappings, instance: Instance,
               context: EncodeContext) -> WireRequest:
        if not isinstance(message, AlertNotification):
            raise WireDecodeError(f"an alert webhook takes alert notifications, not {message.type}")
        headers = (("content-type", "application/json"), ("x-message-id", str(message.message_id)))
        # The channel's URL is the whole target: the path is part of the instance's base URL.
        return WireRequest("POST", "", headers, orjson.dumps(notification_document(message)))

    def decode_response(self, response: WireResponse, *, mappings: Mappings, request: AnyMessage,
                        context: DecodeContext) -> list[AnyMessage]:
        return []  # a receiver's 2xx is the acknowledgement; nothing comes back into the pipeline

    def decode_callback(self, request: WireRequest, *, mappings: Mappings, context: DecodeContext
                        ) -> list[AnyMessage]:
        raise WireDecodeError("alert webhooks do not call the gateway back")
