"""The HTTP edge: httpx sends wire requests; tests swap the transport, never our code."""

from __future__ import annotations

from typing import Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway.mapping import Instance
from gateway.pipeline.ports import WireRequest, WireResponse


class PeerDisconnected(httpx.NetworkError):
    """The counterpart closed the connection after the request was sent: it may well have arrived."""


class ConnectionRefused(httpx.ConnectError):
    """Nothing listens at the counterpart's address (the host answered; nothing was sent)."""


class NameNotResolved(httpx.ConnectError):
    """The counterpart's host name does not resolve (nothing was sent)."""


class TlsFailure(httpx.ConnectError):
    """The TLS handshake failed: an untrusted or invalid certificate, or no TLS at the other end."""


def _remap(exc: httpx.TransportError) -> httpx.TransportError:
    """httpx-aiohttp 0.2 maps every aiohttp connection error to ConnectTimeout (its table picks the most derived
    httpx class); tell apart what happened from aiohttp's own exception, which it keeps as the cause."""
    cause = exc.__cause__
    if not isinstance(cause, aiohttp.ClientError):
        return exc
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(cause))
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(str(cause))
    if isinstance(cause, aiohttp.ClientConnectorDNSError):
        return NameNotResolved(str(cause))
    if isinstance(cause, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError,
                          aiohttp.ClientSSLError)):
        return TlsFailure(str(cause))
    if isinstance(cause, aiohttp.ClientConnectorError):  # nothing was sent
        if isinstance(cause.os_error, ConnectionRefusedError):
            return ConnectionRefused(str(cause))
        return httpx.ConnectError(str(cause))
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
        return PeerDisconnected(f"{type(cause).__name__}: {cause}")
    return exc


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
            mapped = _remap(exc)
            if mapped is exc:
                raise
            raise mapped from exc.__cause__
        return WireResponse(response.status_code, tuple(response.headers.multi_items()), response.content)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
