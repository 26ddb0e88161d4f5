"""An alert webhook receiver: verifies each call's RFC 9421 signature against the gateway's JWKS, counts it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import httpx
import orjson
from fastapi import FastAPI, Request, Response

from adapters.simulation import apply_faults, simulator_app
from security.httpsig import HttpVerifier, MemoryNonceStore, SignatureError
from security.keys import PublicKey
from security.parties import PinError, parse_pin

Jwks = Callable[[], dict[str, Any]]


def jwks_from(url: str) -> Jwks:
    """The gateway's published keys (`GET /v1/keys`), read when a call arrives (a rotation is picked up)."""
    return lambda: httpx.get(url, timeout=10).json()


def create_app(*, name: str = "webhook", path: str = "/hooks/gateway", jwks: Jwks | None = None) -> FastAPI:
    """POST `path` records each notification with whether its signature verified (`verified`, `keyid`)."""
    app, state, _ = simulator_app("Alert webhook receiver (simulator)", name=name)

    def resolve(kid: str) -> PublicKey | None:
        if jwks is None:
            return None
        for jwk in jwks().get("keys", []):
            if jwk.get("kid") == kid:
                try:
                    return parse_pin(orjson.dumps({k: v for k, v in jwk.items() if k != "x5c"})).public_key
                except PinError:
                    return None
        return None

    verifier = HttpVerifier(resolve_key=resolve, nonces=MemoryNonceStore())

    @app.post(path)
    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            doc = orjson.loads(body)
            notification_id = str(doc["notification_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Response(b'{"error":"bad request"}', status_code=400, media_type="application/json")
        fault = await apply_faults(state, notification_id)
        if fault is not None:
            return fault
        headers = tuple((k, v) for k, v in request.headers.items())
        target = f"{request.url.scheme}://{request.headers.get('host', '')}{request.url.path}"
        try:
            verified = await verifier.verify_inbound(method="POST", target_uri=target, headers=headers, body=body,
                                                     now=datetime.now(timezone.utc))
            check = {"verified": True, "keyid": verified.keyid}
        except SignatureError as exc:
            check = {"verified": False, "error": f"{exc.reason}: {exc.detail}"}
        if notification_id not in state.processed:
            state.received.append({**doc, "_signature": check})
        state.processed[notification_id] = state.processed.get(notification_id, 0) + 1
        return Response(orjson.dumps({"received": notification_id}), status_code=200, media_type="application/json")

    return app
