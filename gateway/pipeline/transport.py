"""The HTTP edge: one httpx client sends wire requests; tests swap the transport, never our code."""

from __future__ import annotations

from typing import Protocol

import httpx

from gateway.mapping import Instance
from gateway.pipeline.ports import WireRequest, WireResponse


class Transport(Protocol):
    async def send(self, instance: Instance, request: WireRequest) -> WireResponse: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None, max_connections: int = 200) -> None:
        self.client = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    async def send(self, instance: Instance, request: WireRequest) -> WireResponse:
        response = await self.client.request(
            request.method,
            instance.url + request.path,
            headers=list(request.headers),
            content=request.body,
            timeout=instance.timeout_s,
        )
        return WireResponse(response.status_code, tuple(response.headers.multi_items()), response.content)

    async def aclose(self) -> None:
        await self.client.aclose()
