"""RFC 9457 problem+json for every error, mapped in this one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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


# ---- the problem types: one catalogue for the answers and for the OpenAPI document ------------------------


@dataclass(frozen=True)
class ProblemType:
    """A problem type the API answers with: its status, its title, and a detail as the gateway writes it."""

    slug: str
    status: int
    title: str
    example: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


def _catalogue() -> dict[str, ProblemType]:
    from gateway.access import Forbidden
    from gateway.admin import InvalidConfiguration, NotDeadLettered
    from gateway.audit.query import InvalidAuditQuery, ReasonRequired
    from gateway.canonical.errors import MessageConflict, MessageFromFuture, UnknownCounterpart, WireDecodeError
    from gateway.documents import NoInstance
    from gateway.pipeline.referrals import ReplyContradictsReferral

    def of(cls: type[GatewayError], example: str, **extra: Any) -> ProblemType:
        return ProblemType(cls.slug, cls.status, cls.title, example, extra)

    unauthenticated = "The request is not authenticated"
    types = [
        ProblemType("malformed-json", 400, "The body is not well-formed JSON", "the request body could not be parsed as JSON"),
        ProblemType("invalid-idempotency-key", 400, "Invalid Idempotency-Key",
                    "one Idempotency-Key of 1-255 printable ASCII characters"),
        *(ProblemType(slug, 401, unauthenticated, detail) for slug, detail in (
            ("missing-signature", "sign the request (RFC 9421) or send a bearer token"),
            ("malformed-signature", "Signature-Input is not a valid structured field"),
            ("missing-parameter", "the signature has no `nonce` parameter"),
            ("missing-component", "the signature does not cover content-digest"),
            ("unknown-key", "the signing key is not registered"),
            ("alg-mismatch", "the key is Ed25519, the signature says ecdsa-p256-sha256"),
            ("created-in-future", "the signature was created 75 s ahead of the gateway clock"),
            ("expired", "the signature expired 12 s ago"),
            ("bad-signature", "the signature does not verify with the client's key"),
            ("bad-digest", "Content-Digest does not match the body"),
            ("replayed-nonce", "this nonce was already used"),
            ("revoked-key", "the key of mio-kz-35 that signed this was revoked"),
            ("expired-certificate", "the pinned certificate of con expired on 2026-01-31"),
            ("invalid-signature", "the XML signature does not verify"),
            ("malformed-token", "Authorization must be `Bearer <token>`"),
            ("unknown-token", "the bearer token is not valid"),
            ("revoked-client", "client anna was revoked"))),
        of(Forbidden, "probation-is may not call this endpoint (needs: admin)"),
        ProblemType("not-found", 404, "Not found", "no message 3f0c2a9e-6a1b-4c1d-9d0e-2b7c5e8f1a42"),
        of(UnknownCounterpart, "no counterpart 'akimat' sends callbacks here"),
        ProblemType("method-not-allowed", 405, "Method Not Allowed", "Method Not Allowed"),
        ProblemType("idempotency-key-in-flight", 409, "A request with this Idempotency-Key is in progress",
                    "retry once the first request has been answered"),
        of(NotDeadLettered, "delivery 4127 is not dead-lettered"),
        of(ReplyContradictsReferral, "referral RM-4f1c0d2a is already completed; a referral.rejected cannot follow it",
           ),
        ProblemType("payload-too-large", 413, "Request body too large", "the body is larger than 1048576 bytes"),
        ProblemType("unsupported-media-type", 415, "Unsupported media type",
                    "the body must be application/json; got text/plain"),
        ProblemType("invalid-message", 422, "The request does not match its schema",
                    "/body/body/person/iin: not a valid IIN: the check digit (12th) does not match the first 11 digits",
                    {"errors": [{"pointer": "/body/body/person/iin",
                                 "detail": "not a valid IIN: the check digit (12th) does not match the first 11 digits"}]}),
        ProblemType("unknown-message-type", 422, "Unknown message type",
                    "`type` must be one of the canonical message types of the brief"),
        of(MessageConflict, "message 3f0c2a9e-6a1b-4c1d-9d0e-2b7c5e8f1a42 was accepted with other content"),
        of(MessageFromFuture, "occurred_at is 600 s ahead of the gateway clock; at most 300 s is allowed"),
        ProblemType("idempotency-key-reused", 422, "Idempotency-Key reused for another request",
                    "this key was first used with another request body or path"),
        of(WireDecodeError, "the callback does not make a valid canonical message: occurred_at: Field required"),
        of(InvalidConfiguration, "/timeout_s: Input should be less than or equal to 300",
           errors=[{"pointer": "/timeout_s", "detail": "Input should be less than or equal to 300"}]),
        of(InvalidAuditQuery, "`cursor` is not a cursor this API returned"),
        of(ReasonRequired, "give a `reason` for reading personal data; the read is logged with it"),
        of(StoreUnavailable, "the store cannot be reached or written just now; nothing of this request was written",
           reason="connection refused"),
        of(NoInstance, "no instance of con is enabled for identity_document_status"),
    ]
    return {t.slug: t for t in types}


_TYPES: dict[str, ProblemType] | None = None


def problem_types() -> dict[str, ProblemType]:
    global _TYPES
    if _TYPES is None:
        _TYPES = _catalogue()
    return _TYPES


def problem_of(slug: str, detail: str, *, instance: str | None = None, **extra: Any) -> Response:
    """The answer for a catalogued problem type (its status and title from the catalogue)."""
    known = problem_types()[slug]
    return problem(known.status, slug, known.title, detail, instance=instance, **extra)


def responses(*slugs: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these problem types, grouped by status, each with an example."""
    out: dict[int | str, dict[str, Any]] = {}
    for slug in slugs:
        known = problem_types()[slug]
        entry = out.setdefault(known.status, {"description": "", "content": {PROBLEM_MEDIA_TYPE: {
            "schema": {"$ref": "#/components/schemas/Problem"}, "examples": {}}}})
        entry["content"][PROBLEM_MEDIA_TYPE]["examples"][slug] = {"$ref": f"#/components/examples/{slug}"}
        entry["description"] = "; ".join(
            f"`{name}`: {problem_types()[name].title}" for name in entry["content"][PROBLEM_MEDIA_TYPE]["examples"])
    return out


def example(known: ProblemType) -> dict[str, Any]:
    """The problem type's example (components/examples/<slug> in the OpenAPI document)."""
    value: dict[str, Any] = {"type": known.type, "title": known.title, "status": known.status, "detail": known.example}
    value.update(known.extra)
    return {"summary": f"{known.slug}: {known.title}", "value": value}


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


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods some route of the app answers at `path` (RFC 9110 `Allow`)."""
    from fastapi import routing

    methods: set[str] = set()
    for route in routing.iter_route_contexts(app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and route.methods:
            methods |= set(route.methods)
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


def _not_json(request: Request) -> str | None:
    """The media type of a body that FastAPI did not read as JSON, or None (JSON, or no Content-Type)."""
    value = request.headers.get("content-type")
    if not value:
        return None
    media_type = value.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
        return None
    return media_type or "an empty Content-Type"


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
        path = request.url.path
        if any(e.get("type") == "json_invalid" for e in errors):
            _count_refusal(request, "malformed-json")
            return problem_of("malformed-json", "the request body could not be parsed as JSON", instance=path)
        if (media_type := _not_json(request)) is not None and any(e["loc"][:1] == ("body",) for e in errors):
            _count_refusal(request, "unsupported-media-type")
            return problem_of("unsupported-media-type", f"the body must be application/json; got {media_type}",
                              instance=path)
        if any(e.get("type") == "union_tag_invalid" for e in errors):
            _count_refusal(request, "unknown-message-type")
            return problem_of("unknown-message-type", "`type` must be one of the canonical message types of the brief",
                              instance=path)
        # Never echo the submitted values back: they may hold personal data.
        listed = [{"pointer": _pointer(tuple(e["loc"])), "detail": e["msg"]} for e in errors]
        _count_refusal(request, "invalid-message")
        detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in listed[:5])
        return problem_of("invalid-message", detail, instance=path, errors=listed)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        if (console := _console(request)) is not None:
            error = GatewayError(str(exc.detail))
            error.slug, error.status = slug, exc.status_code
            return await console.error_page(request, error)
        response = problem(exc.status_code, slug, str(exc.detail), str(exc.detail), instance=request.url.path)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:  # every method of the path (Starlette names only the first route's)
            response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return response

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
