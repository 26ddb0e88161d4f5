"""A lean HTTP/1.1 load generator on asyncio streams, so the client costs little next to the servers."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import urlsplit


@dataclass
class Result:
    sent_at: list[float] = field(default_factory=list)  # wall clock, per request, in request order
    latency: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(lines[0].split()[1]), (await reader.readexactly(length) if length else b"")


Signer = Callable[[str, bytes], list[tuple[str, str]]]  # (target URI, body) -> extra header lines


def post_request(host: str, port: int, path: str, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def get_request(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


async def send_all(host: str, port: int, count: int, request: Callable[[int], bytes], *,
                   concurrency: int) -> Result:
    """Requests 0..count-1, each made by `request(i)` just before it is sent, over `concurrency` keep-alive
    connections; per-request timings."""
    result = Result(sent_at=[0.0] * count, latency=[0.0] * count)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < count:
                i = next_index
                next_index += 1
                wire = request(i)
                result.sent_at[i] = time.time()
                t0 = time.perf_counter()
                writer.write(wire)
                status, _ = await read_response(reader)
                result.latency[i] = time.perf_counter() - t0
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


async def post_all(url: str, path: str, bodies: Sequence[bytes], *, concurrency: int,
                   sign: Signer | None = None) -> Result:
    """POST every body over `concurrency` keep-alive connections; returns per-request timings.

    With `sign`, each request carries the headers it returns (signed just before it is sent, as a real client
    does, so the client's signing time is inside the measured window).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return await send_all(host, port, len(bodies), lambda i: post_request(
        host, port, path, bodies[i], sign(url + path, bodies[i]) if sign else ()), concurrency=concurrency)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
