"""The HTTP edge: httpx sends wire requests and its errors become the gateway's own transport failures."""

from __future__ import annotations

from typing import Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway.mapping import Instance
from gateway.wire import (
    ConnectFailed,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    NameNotResolved,
    PeerDisconnected,
    ReadTimeout,
    TlsFailure,
    TransportBroken,
    TransportFailure,
    WireRequest,
    WireResponse,
)


def _failure(exc: httpx.TransportError) -> TransportFailure:
    """The gateway's own failure for an httpx error, as httpx maps httpcore's. httpx-aiohttp 0.2 maps every aiohttp
    connection error to ConnectTimeout (its table picks the most derived httpx class), so what happened is told
    apart from aiohttp's own exception, which it keeps as the cause."""
    cause = exc.__cause__
    text = str(exc) or type(exc).__name__
    if isinstance(cause, aiohttp.ClientError):
        if isinstance(cause, aiohttp.ConnectionTimeoutError):
            return ConnectTimeout(str(cause) or type(cause).__name__)
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return ReadTimeout(str(cause) or type(cause).__name__)
        if isinstance(cause, aiohttp.ClientConnectorDNSError):
            return NameNotResolved(str(cause))
        if isinstance(cause, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError,
                              aiohttp.ClientSSLError)):
            return TlsFailure(str(cause))
        if isinstance(cause, aiohttp.ClientConnectorError):  # nothing was sent
            if isinstance(cause.os_error, ConnectionRefusedError):
                return ConnectionRefused(str(cause))
            return ConnectFailed(str(cause))
        if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
            return PeerDisconnected(f"{type(cause).__name__}: {cause}")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return PeerDisconnected(text)
    if isinstance(exc, httpx.ConnectTimeout):
        return ConnectTimeout(text)
    if isinstance(exc, httpx.ConnectError):
        return ConnectFailed(text)
    if isinstance(exc, httpx.TimeoutException):
        return ReadTimeout(text)
    if isinstance(exc, httpx.NetworkError):
        return ConnectionLost(text)
    return TransportBroken(f"{type(exc).__name__}: {exc}")


class Transport(Protocol):
    async def send(self, instance: Instance, request: WireRequest) -> WireResponse: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    """httpx clients, one per counterpart instance, each pool sized to the instance's in-flight limit.

    httpx's own connection pool (httpcore) scans every connection for every request and costs
    3.7 ms of CPU per request at 32 concurrent requests on this machine; httpx over aiohttp's
    connector costs 0.3 ms (bench/RESULTS.md). The API, timeouts and exception types stay httpx's."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, instance: Instance) -> httpx.AsyncClient:
        client = self._clients.get(instance.name)
        if client is None:
            size = instance.max_in_flight
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            client = httpx.AsyncClient(
                transport=self._transport or AiohttpTransport(limits=limits),
                limits=limits,
                follow_redirects=False,
            )
            self._clients[instance.name] = client
        return client

    async def send(self, instance: Instance, request: WireRequest) -> WireResponse:
        try:
            response = await self._client(instance).request(
                request.method,
                instance.url + request.path,
                headers=list(request.headers),
                content=request.body,
                timeout=instance.timeout_s,
            )
        except httpx.TransportError as exc:
            raise _failure(exc) from (exc.__cause__ or exc)
        return WireResponse(response.status_code, tuple(response.headers.multi_items()), response.content)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
