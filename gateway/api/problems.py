"""RFC 9457 problem+json for every error, mapped in this one place."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.canonical.errors import GatewayError, NotFound, PayloadTooLarge
from gateway.storage.faults import StoreUnavailable, as_unavailable

PROBLEM_BASE = "urn:probation-gateway:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("gateway.api")


def problem(status: int, slug: str, title: str, detail: str, *, instance: str | None = None,
            **extra: Any) -> Response:
    doc: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    if instance:
        doc["instance"] = instance
    doc.update(extra)
    return Response(orjson.dumps(doc), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


SOAP_INBOUND = "/v1/inbound/con"  # ЦОН speaks SOAP 1.1: it gets its errors as a SOAP Fault


def unavailable(exc: StoreUnavailable, *, path: str) -> Response:
    """503 with Retry-After: problem+json, or a SOAP Fault (faultcode Server) on the SOAP inbound."""
    if path == SOAP_INBOUND:
        from datetime import datetime, timezone

        from adapters.con.codec import build_fault

        response = Response(build_fault(faultcode="Server", faultstring=exc.title, error_code=exc.slug,
                                        error_message=exc.detail, error_date=datetime.now(timezone.utc)),
                            status_code=503, media_type="text/xml; charset=utf-8")
    else:
        response = problem(503, exc.slug, exc.title, exc.detail, instance=path, reason=exc.reason)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


class StoreOutage:
    """Pure ASGI, around authentication: a store outage met before any route runs (the nonce store, the client
    directory, idempotency keys) is the same 503 as one met inside a route, never a 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            typed = as_unavailable(exc)
            if typed is None:
                raise
            if started:  # the answer is out (a 503 from a route); what failed after it changes nothing
                log.warning("store unavailable after the answer was sent (%s)", typed.reason,
                            extra={"path": scope["path"]})
                return
            metrics = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                metrics.count_refusal(path=scope["path"], problem=typed.slug)
            await unavailable(typed, path=scope["path"])(scope, receive, send)


def _pointer(loc: tuple[Any, ...]) -> str:
    # Drop the discriminator step pydantic adds ("risk.detected") so the pointer matches the document.
    parts = [str(p) for p in loc if not (isinstance(p, str) and "." in p and p[0].islower() and p.count(".") == 1)]
    return "/" + "/".join(parts)


def _count_refusal(request: Request, slug: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_refusal(path=request.url.path, problem=slug)


def _console(request: Request) -> Any:
    """The console, when the request is for one of its pages: people get a page, not problem+json."""
    console = getattr(request.app.state, "console", None)
    return console if console is not None and request.url.path.startswith("/console") else None


def install(app: FastAPI) -> None:
    from gateway.console.web import NotSignedIn

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        return request.app.state.console.to_sign_in(request)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        _count_refusal(request, exc.slug)
        if (console := _console(request)) is not None:
            return await console.error_page(request, exc)
        if isinstance(exc, StoreUnavailable):
            return unavailable(exc, path=request.url.path)
        return problem(exc.status, exc.slug, exc.title, exc.detail, instance=request.url.path, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if (console := _console(request)) is not None:  # a malformed address (/exchanges/abc): a page
            return await console.error_page(request, NotFound("the address is not one of the console's pages"))
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            _count_refusal(request, "malformed-json")
            return problem(400, "malformed-json", "The body is not well-formed JSON",
                           "the request body could not be parsed as JSON", instance=request.url.path)
        if any(e.get("type") == "union_tag_invalid" for e in errors):
            _count_refusal(request, "unknown-message-type")
            return problem(422, "unknown-message-type", "Unknown message type",
                           "`type` must be one of the canonical message types of the brief",
                           instance=request.url.path)
        # Never echo the submitted values back: they may hold personal data.
        listed = [{"pointer": _pointer(tuple(e["loc"])), "detail": e["msg"]} for e in errors]
        _count_refusal(request, "invalid-message")
        detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in listed[:5])
        return problem(422, "invalid-message", "The message does not match its schema", detail,
                       instance=request.url.path, errors=listed)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        if (console := _console(request)) is not None:
            error = GatewayError(str(exc.detail))
            error.slug, error.status = slug, exc.status_code
            return await console.error_page(request, error)
        return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        if (typed := as_unavailable(exc)) is not None:  # a read the store could not answer: an outage, not a bug
            return await _gateway_error(request, typed)
        log.exception("unhandled error", extra={"path": request.url.path})
        if (console := _console(request)) is not None:
            return await console.error_page(request, GatewayError("the gateway failed; nothing was half-written"))
        return problem(500, "internal-error", "Internal error", "the gateway failed; nothing was half-written",
                       instance=request.url.path)


class BodyLimit:
    """Refuses a body over the limit before it is read whole (pure ASGI, so it stays cheap)."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    return await self._refuse(scope, receive, send)
        seen = 0
        too_big = False

        async def limited_receive() -> dict:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    raise PayloadTooLarge(f"the body is larger than {self.max_bytes} bytes")
            return message

        replaced = False

        async def guarded_send(message: dict) -> None:
            # FastAPI turns an error raised while it reads a body into a 400 "error parsing the body":
            # once the limit was hit, whatever the app answers, the client gets the 413 problem.
            nonlocal replaced
            if message["type"] == "http.response.start" and too_big:
                replaced = True
                await self._refuse(scope, receive, send)
            elif not replaced:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = problem(413, PayloadTooLarge.slug, PayloadTooLarge.title,
                           f"the body is larger than {self.max_bytes} bytes", instance=scope.get("path"))
        await response(scope, receive, send)
