"""Idempotency-Key on client POSTs (IETF httpapi draft): replay, 422 on another body, 409 while in flight."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from gateway.api.body import read_body, replaying
from gateway.api.problems import problem_of

log = logging.getLogger("gateway.api")

HEADER = b"idempotency-key"
KEPT_HEADERS = ("content-type", "location", "retry-after")


async def _abandon(keys: Any, *, client_id: str, key: str) -> None:
    try:
        await keys.abandon(client_id=client_id, key=key)
    except Exception:  # noqa: BLE001
        # The store is away (the answer was a 503): the key is freed once it is older than any request can be.
        log.warning("idempotency key not released; it frees itself", extra={"client_id": client_id})


def _key(value: bytes) -> str | None:
    """The key of an Idempotency-Key field: a token or a quoted string (RFC 8941 sf-string) of 1-255 printable
    ASCII characters, no double quote, no space at either end; None when it is not one."""
    try:
        raw = value.decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        return None
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not 1 <= len(key) <= 255 or key != key.strip(" ") or any(not " " <= c <= "~" or c == '"' for c in key):
        return None
    return key


class Idempotency:
    """Pure ASGI, inside authentication: keys are scoped to the verified client, never to a claimed one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        values = [v for k, v in scope["headers"] if k == HEADER]
        principal = scope.get("state", {}).get("principal")
        if not values or principal is None:
            return await self.app(scope, receive, send)
        path = scope["path"]
        key = _key(values[0])
        if len(values) > 1 or key is None:
            return await problem_of("invalid-idempotency-key", "one Idempotency-Key of 1-255 printable ASCII characters",
                                    instance=path)(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        digest = hashlib.sha256(b"%s %s?%s\n" % (scope["method"].encode(), path.encode(), scope["query_string"])
                                + body).hexdigest()
        container = scope["app"].state.container
        keys = container.idempotency
        begun = await keys.begin(client_id=principal.client_id, key=key, request_hash=digest, now=container.clock())
        if begun.outcome == "mismatch":
            return await problem_of("idempotency-key-reused", "this key was first used with another request body or path",
                                    instance=path)(scope, receive, send)
        if begun.outcome == "in_flight":
            response = problem_of("idempotency-key-in-flight", "retry once the first request has been answered",
                                  instance=path)
            response.headers["Retry-After"] = "1"
            return await response(scope, receive, send)
        if begun.outcome == "replay":
            headers = [(k.encode(), v.encode()) for k, v in (begun.headers or {}).items()]
            headers.append((b"idempotent-replayed", b"true"))
            headers.append((b"content-length", str(len(begun.body or b"")).encode()))
            await send({"type": "http.response.start", "status": begun.status, "headers": headers})
            await send({"type": "http.response.body", "body": begun.body or b""})
            return

        replay = replaying(body, receive)

        status = 500
        kept: dict[str, str] = {}
        out: list[bytes] = []

        async def capture(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", ()):
                    name = k.decode("latin-1").lower()
                    if name in KEPT_HEADERS:
                        kept[name] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay, capture)
        except BaseException:
            await _abandon(keys, client_id=principal.client_id, key=key)
            raise
        if status >= 500:
            await _abandon(keys, client_id=principal.client_id, key=key)
        else:
            await keys.finish(client_id=principal.client_id, key=key, status=status, headers=kept, body=b"".join(out))
