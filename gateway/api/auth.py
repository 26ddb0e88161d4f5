"""Authentication before any route runs, and the role each route declares."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Depends, Request

from gateway.access import Forbidden, Unauthenticated
from gateway.api.docs import ASSETS_PATH as DOCS_ASSETS
from gateway.api.body import read_body, replaying
from gateway.api.problems import problem
from gateway.canonical.errors import PayloadTooLarge
from security.access import Principal

# Readable without credentials: health for load balancers, metrics for the scraper, the gateway's public
# keys (so peers can verify it), and the API description.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/keys", "/docs", "/docs/oauth2-redirect",
                          "/redoc", "/openapi.json"})
CHALLENGE = 'Signature realm="probation-gateway", Bearer realm="probation-gateway"'
# The console signs people in with its own server-side sessions (gateway/console), not per request.
CONSOLE_PATHS = ("/console/",)


def _own_authentication(path: str) -> bool:
    return path in PUBLIC_PATHS or path == "/" or path == "/console" or path.startswith(CONSOLE_PATHS)


class Authenticate:
    """Pure ASGI: reads the body once, verifies it, and hands the route the principal and the verified body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _own_authentication(scope["path"]) or scope["path"].startswith(DOCS_ASSETS + "/"):
            return await self.app(scope, receive, send)
        container = scope["app"].state.container
        try:
            body = await read_body(receive)
        except PayloadTooLarge as exc:
            response = problem(413, exc.slug, exc.title, exc.detail, instance=scope["path"])
            return await response(scope, receive, send)
        if body is None:
            return  # the client went away
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        state = scope.setdefault("state", {})
        state["body_sha256"] = hashlib.sha256(body).hexdigest()
        try:
            authenticated = await container.authenticator.authenticate(
                method=scope["method"], path=scope["path"], query=scope["query_string"].decode("latin-1"),
                headers=headers, body=body)
        except Unauthenticated as exc:
            await container.security_events.refused(client=exc.client, reason=exc.slug, method=scope["method"],
                                                    path=scope["path"], body=body, status=401)
            metrics = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                metrics.count_refusal(path=scope["path"], problem=exc.slug)
            response = problem(401, exc.slug, exc.title, exc.detail, instance=scope["path"])
            response.headers["WWW-Authenticate"] = CHALLENGE
            return await response(scope, receive, send)
        state["principal"] = authenticated.principal
        state["raw_body"] = body
        state["verified_body"] = authenticated.body
        replay = replaying(body, receive)

        principal = authenticated.principal

        async def send_after_recording(message: dict) -> None:
            # Every 403 is a security event, wherever the app decided it: a role the route does not admit
            # (require) or a counterpart speaking for another one (the inbound pipeline).
            if message["type"] == "http.response.start" and message["status"] == 403:
                await container.security_events.refused(client=principal.client_id, reason="forbidden",
                                                        method=scope["method"], path=scope["path"], body=body,
                                                        status=403)
            await send(message)

        await self.app(scope, replay, send_after_recording)


def principal_of(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        raise Unauthenticated("missing-signature", "this endpoint needs a signed request or a bearer token")
    return principal


def require(*roles: str) -> Any:
    """A dependency admitting only callers with one of `roles`; Authenticate records the 403 as a security event."""
    allowed = frozenset(roles)

    async def check(request: Request) -> Principal:
        principal = principal_of(request)
        if not principal.has_any(allowed):
            raise Forbidden(f"{principal.client_id} may not call this endpoint (needs: {', '.join(sorted(allowed))})")
        return principal

    check.roles = allowed  # type: ignore[attr-defined]  # read by the test that every route declares roles
    return Depends(check)
