"""Typed domain errors; the API maps each to one problem+json type."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    slug = "gateway-error"
    status = 500
    title = "Gateway error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class MessageConflict(GatewayError):
    slug = "message-id-conflict"
    status = 422
    title = "The message_id was already used for other content"


class MessageFromFuture(GatewayError):
    slug = "occurred-at-in-future"
    status = 422
    title = "occurred_at is too far ahead of the gateway clock"


class NotFound(GatewayError):
    slug = "not-found"
    status = 404
    title = "Not found"


class UnknownCounterpart(GatewayError):
    slug = "unknown-counterpart"
    status = 404
    title = "No such counterpart"


class WireDecodeError(GatewayError):
    """A counterpart's bytes could not be turned into canonical messages."""

    slug = "undecodable-wire-message"
    status = 422
    title = "The wire message could not be decoded"


class PayloadTooLarge(GatewayError):
    slug = "payload-too-large"
    status = 413
    title = "Request body too large"


class ConfigError(Exception):
    """A configuration or mapping file is invalid; start-up stops with this message."""
