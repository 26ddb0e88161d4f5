"""Pure codec for the Probation IS: canonical JSON both ways."""

from __future__ import annotations

from gateway.canonical.errors import WireDecodeError
from gateway.canonical.messages import AnyMessage
from gateway.mapping import Instance, Mappings
from gateway.pipeline.ports import DecodeContext, EncodeContext, SignatureChannel, WireRequest, WireResponse

RECEIVE_PATH = "/api/v1/gateway-messages"


class ProbationAdapter:
    counterpart = "probation"
    signature_channel: SignatureChannel = "http"

    def encode(
        self, message: AnyMessage, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest:
        return WireRequest(
            "POST",
            RECEIVE_PATH,
            (("content-type", "application/json"), ("x-message-id", str(message.message_id))),
            message.to_json(),
        )

    def decode_response(
        self, response: WireResponse, *, mappings: Mappings, request: AnyMessage, context: DecodeContext
    ) -> list[AnyMessage]:
        return []  # an acknowledgement carries no business message

    def decode_callback(self, request: WireRequest, *, mappings: Mappings, context: DecodeContext) -> list[AnyMessage]:
        raise WireDecodeError("the Probation IS submits messages through POST /v1/messages")
