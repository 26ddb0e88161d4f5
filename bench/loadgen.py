"""A lean HTTP/1.1 load generator on asyncio streams, so the client costs little next to the servers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlsplit


@dataclass
class Result:
    sent_at: list[float] = field(default_factory=list)  # wall clock, per request, in request order
    latency: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


Signer = Callable[[str, bytes], list[tuple[str, str]]]  # (target URI, body) -> extra header lines


async def post_all(url: str, path: str, bodies: Sequence[bytes], *, concurrency: int,
                   sign: Signer | None = None) -> Result:
    """POST every body over `concurrency` keep-alive connections; returns per-request timings.

    With `sign`, each request carries the headers it returns (signed just before it is sent, as a real client
    does, so the client's signing time is inside the measured window).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = Result(sent_at=[0.0] * len(bodies), latency=[0.0] * len(bodies))
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                body = bodies[i]
                extra = "".join(f"{k}: {v}\r\n" for k, v in sign(url + path, body)) if sign else ""
                request = (
                    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n{extra}\r\n"
                ).encode() + body
                result.sent_at[i] = time.time()
                t0 = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                result.latency[i] = time.perf_counter() - t0
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
