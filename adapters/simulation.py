"""What every counterpart simulator shares: fault scripts, duplicate detection, stats and callbacks."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import random
import time
from contextlib import asynccontextmanager
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx
from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.wire import WireRequest, WireResponse
from security.parties import PartyKey

log = logging.getLogger("simulator")

# The request being answered (method, absolute URI, header lines): a signed answer is bound to it.
_CURRENT: contextvars.ContextVar[tuple[str, str, tuple[tuple[str, str], ...]] | None] = contextvars.ContextVar(
    "sim_request", default=None)


@dataclass
class SimSigner:
    """How a simulator signs, as its real counterpart would: RFC 9421 for JSON, an XML signature for SOAP."""

    key: PartyKey
    xml: bool = False

    def __post_init__(self) -> None:
        self._http = None if self.xml else self.key.http_signer()
        self._xml = self.key.xml_signer() if self.xml else None

    def response(self, status: int, body: bytes, media_type: str) -> tuple[bytes, dict[str, str]]:
        if self._xml is not None:
            return (self._xml.sign(body) if body.lstrip().startswith(b"<") else body), {}
        current = _CURRENT.get()
        request, uri = (None, None) if current is None else (WireRequest(current[0], "", current[2], b""), current[1])
        signed = self._http.sign_response(WireResponse(status, (("content-type", media_type),), body),
                                          request=request, target_uri=uri)
        return body, {k: v for k, v in signed.headers if k.lower() != "content-type"}

    def request(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        if self._xml is not None:
            return self._xml.sign(body), headers
        signed = self._http.sign_request(WireRequest("POST", "", tuple(headers.items()), body), target_uri=url)
        return body, dict(signed.headers)


class FaultConfig(BaseModel):
    """Set with POST /_sim/config; administrators rehearse a counterpart's bad days with it."""

    model_config = ConfigDict(extra="forbid")
    latency_ms: float = Field(0, ge=0)
    error_rate: float = Field(0, ge=0, le=1, description="share of requests answered 503")
    per_message: list[int] = Field(default_factory=list, description="statuses for a message's first attempts")
    storm_status: int = 503
    storm_count: int = Field(0, ge=0, description="answer the next N requests with storm_status")
    retry_after: str | None = None
    timeout_count: int = Field(0, ge=0, description="hang the next N requests past any sane timeout")
    reset_count: int = Field(0, ge=0, description="cut the connection mid-answer on the next N requests")
    slow_body_ms: float = Field(0, ge=0, description="drip each answer's body out over this long")
    malformed_count: int = Field(0, ge=0, description="answer the next N requests 200 with a body that does not parse")
    callback_delay_ms: float = Field(50, ge=0)
    callbacks: bool = True


@dataclass
class SimState:
    name: str
    config: FaultConfig = field(default_factory=FaultConfig)
    attempts: dict[str, list[float]] = field(default_factory=dict)  # message id -> wall-clock times
    processed: dict[str, int] = field(default_factory=dict)  # message id -> times processed (non-duplicate)
    responses: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    raw: deque = field(default_factory=lambda: deque(maxlen=200))  # the last requests, byte for byte
    signer: SimSigner | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": sum(len(v) for v in self.attempts.values()),
            "unique_messages": len(self.processed),
            "processed_twice": sorted(k for k, v in self.processed.items() if v > 1),
            "duplicates": sum(len(v) for v in self.attempts.values()) - len(self.attempts),
            "attempts": self.attempts,
            "callbacks_sent": self.callbacks_sent,
            "callbacks_failed": self.callbacks_failed,
        }


async def apply_faults(state: SimState, message_id: str, *, media_type: str = "application/json") -> Response | None:
    """Record the attempt, then answer with a scripted fault or None to go on normally."""
    cfg = state.config
    attempts = state.attempts.setdefault(message_id, [])
    attempts.append(time.time())
    if cfg.latency_ms:
        await asyncio.sleep(cfg.latency_ms / 1000)
    if cfg.timeout_count > 0:
        cfg.timeout_count -= 1
        await asyncio.sleep(3600)
    if cfg.reset_count > 0:
        cfg.reset_count -= 1
        return _cut_off()
    if cfg.malformed_count > 0:
        cfg.malformed_count -= 1
        # signed like any answer: the bytes are authentic but do not parse (a counterpart's bug, not an attack)
        return signed_response(state, 200, b'{"truncated": <Envelope', media_type)
    headers = {"Retry-After": cfg.retry_after} if cfg.retry_after else {}
    if cfg.storm_count > 0:
        cfg.storm_count -= 1
        return Response(status_code=cfg.storm_status, headers=headers)
    index = len(attempts) - 1
    if index < len(cfg.per_message):
        return Response(status_code=cfg.per_message[index], headers=headers,
                        content=b'{"error":"scripted fault"}', media_type="application/json")
    if cfg.error_rate and random.random() < cfg.error_rate:
        return Response(status_code=503, headers=headers)
    return None


def _cut_off() -> Response:
    """Promise a body and stop half-way: the server drops the connection, as a crashed peer does."""

    async def half() -> AsyncIterator[bytes]:
        yield b'{"partial":'

    return StreamingResponse(half(), status_code=200, media_type="application/json",
                             headers={"content-length": "4096"})


def answer(state: SimState, message_id: str, status: int, body: bytes,
           media_type: str = "application/json") -> Response:
    """Remember the answer to a message (a repeat gets the same one) and send it, slowly if so configured."""
    state.responses[message_id] = (status, body)
    return slow(signed_response(state, status, body, media_type), state)


def signed_response(state: SimState, status: int, body: bytes, media_type: str) -> Response:
    if state.signer is None:
        return Response(body, status_code=status, media_type=media_type)
    body, headers = state.signer.response(status, body, media_type)
    return Response(body, status_code=status, media_type=media_type, headers=headers)


def repeat(state: SimState, message_id: str, media_type: str = "application/json") -> Response | None:
    """The stored answer when this message was already processed: counterparts drop duplicates by id."""
    if message_id not in state.responses:
        return None
    status, body = state.responses[message_id]
    return slow(signed_response(state, status, body, media_type), state)


def slow(response: Response, state: SimState) -> Response:
    """Send an answer's body in small pieces spread over `slow_body_ms` (a slow or congested peer)."""
    delay = state.config.slow_body_ms / 1000
    if not delay:
        return response
    body = bytes(response.body)
    pieces = [body[i:i + 16] for i in range(0, len(body), 16)] or [b""]

    async def drip() -> AsyncIterator[bytes]:
        for piece in pieces:
            await asyncio.sleep(delay / len(pieces))
            yield piece

    headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
    return StreamingResponse(drip(), status_code=response.status_code, media_type=response.media_type,
                             headers={**headers, "content-length": str(len(body))})


def add_control_routes(app: FastAPI, state: SimState) -> None:
    @app.get("/_sim/stats", include_in_schema=False)
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/_sim/raw", include_in_schema=False)
    async def raw() -> list[dict[str, Any]]:
        """The last requests as received (headers and base64 body), to check signatures from outside."""
        return list(state.raw)

    @app.get("/_sim/received", include_in_schema=False)
    async def received() -> list[dict[str, Any]]:
        return state.received

    @app.post("/_sim/config", include_in_schema=False)
    async def configure(cfg: FaultConfig) -> dict[str, Any]:
        state.config = cfg
        return cfg.model_dump()

    @app.post("/_sim/reset", include_in_schema=False)
    async def reset() -> dict[str, str]:
        state.attempts.clear()
        state.processed.clear()
        state.responses.clear()
        state.received.clear()
        state.raw.clear()
        state.config = FaultConfig()
        state.callbacks_sent = state.callbacks_failed = 0
        return {"status": "reset"}


class CallbackSender:
    """Sends a counterpart's asynchronous callbacks to the gateway, retrying while it is away."""

    def __init__(self, state: SimState, url: str) -> None:
        self.state = state
        self.url = url
        self.client = httpx.AsyncClient(timeout=10)
        self.tasks: set[asyncio.Task] = set()

    def schedule(self, body: bytes, headers: dict[str, str]) -> None:
        if not self.state.config.callbacks:
            return
        task = asyncio.create_task(self._send(body, headers))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, body: bytes, headers: dict[str, str]) -> None:
        await asyncio.sleep(self.state.config.callback_delay_ms / 1000)
        for attempt in range(30):
            try:
                content, sent_headers = body, headers
                if self.state.signer is not None:  # signed afresh each try: a nonce is good for one request
                    content, sent_headers = self.state.signer.request(self.url, body, headers)
                response = await self.client.post(self.url, content=content, headers=sent_headers)
                if response.status_code < 500:
                    self.state.callbacks_sent += 1
                    if response.status_code >= 400:
                        log.warning("gateway refused callback: %s %s", response.status_code, response.text[:200])
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
        self.state.callbacks_failed += 1

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.client.aclose()


def simulator_app(title: str, *, name: str, callback_url: str | None = None, signer: SimSigner | None = None
                  ) -> tuple[FastAPI, SimState, CallbackSender]:
    """A simulator's app with its state, control routes and callback sender (closed on shutdown)."""
    state = SimState(name, signer=signer)
    sender = CallbackSender(state, callback_url or "")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await sender.aclose()

    app = FastAPI(title=f"{title} ({name})", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.sim = state
    add_control_routes(app, state)
    app.add_middleware(RecordRaw, state=state)
    return app, state, sender


class RecordRaw:
    """Keeps each business request's exact bytes (pure ASGI: it must not change what the app reads)."""

    def __init__(self, app: Any, *, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim/"):
            return await self.app(scope, receive, send)
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        host = next((v for k, v in headers if k == "host"), "")
        query = ("?" + scope["query_string"].decode()) if scope["query_string"] else ""
        _CURRENT.set((scope["method"], f"{scope.get('scheme', 'http')}://{host}{scope['path']}{query}", headers))
        chunks: list[bytes] = []

        async def recording() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.state.raw.append({
                        "method": scope["method"],
                        "path": scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else ""),
                        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
                        "body": base64.b64encode(b"".join(chunks)).decode(),
                    })
            return message

        await self.app(scope, recording, send)
