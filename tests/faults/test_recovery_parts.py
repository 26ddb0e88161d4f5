"""The parts the fault scenarios rely on, each shown alone: the loop helper, reason classes, breaker probes, 503s."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gateway.loops import Loop
from gateway.mapping import BreakerPolicy, Instance
from gateway.pipeline.ports import WireRequest
from gateway.pipeline.retry import CircuitBreaker, classify_transport_error
from gateway.pipeline.transport import HttpxTransport
from gateway.wire import ConnectionRefused, PeerDisconnected
from gateway.samples import SampleCases
from gateway.storage.faults import StoreUnavailable, outage_reason
from tests.faults.scenarios import fill_disk, mount_small_disk
from tests.harness import Stack, free_port, wait_for


async def _until(predicate, *, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_failing_loop_backs_off_reports_down_and_recovers_by_itself() -> None:
    calls: list[float] = []

    async def step() -> float:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise StoreUnavailable("store away", reason="connection refused")
        return 0.05

    loop = Loop("test", step, interval_s=0.05, backoff_base_s=0.05, backoff_max_s=0.2)
    loop.start()
    await _until(lambda: loop.state == "down")
    assert not loop.healthy and loop.snapshot()["error"].startswith("StoreUnavailable")
    await _until(lambda: loop.state == "up" and len(calls) >= 5)
    assert loop.healthy and loop.failures == 0 and loop.total_failures == 3
    assert loop.snapshot()["last_success"] is not None
    gaps = [b - a for a, b in zip(calls, calls[1:4])]
    assert all(g >= 0.025 for g in gaps), gaps  # backed off (at least half the jittered base), no hammering
    await loop.stop()
    assert loop.state == "stopped" and not loop.running


def test_outages_are_told_apart_from_other_failures() -> None:
    import sqlite3

    assert outage_reason(sqlite3.OperationalError("database or disk is full")) == "disk full"
    assert outage_reason(sqlite3.OperationalError("attempt to write a readonly database")) == \
        "database file is read-only"
    assert outage_reason(ConnectionRefusedError(111, "Connect call failed")).startswith("store unreachable")
    assert outage_reason(ValueError("bad value")) is None
    assert outage_reason(sqlite3.IntegrityError("UNIQUE constraint failed")) is None


async def _one_shot_server(mode: str) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the whole request (it has no body) arrived
        if mode == "partial":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_disconnect_after_the_request_was_sent_is_not_a_connect_timeout() -> None:
    transport = HttpxTransport()
    request = WireRequest("POST", "/", (("content-type", "application/json"),), b"")
    try:
        for mode in ("close", "partial"):
            server, port = await _one_shot_server(mode)
            inst = Instance(name="peer-x", counterpart="mio", base_url=f"http://127.0.0.1:{port}", keys=[],
                            require_signatures=False)
            with pytest.raises(PeerDisconnected) as caught:
                await transport.send(inst, request)
            failure = classify_transport_error(caught.value)
            assert failure.reason.startswith("disconnected after send") and failure.retryable, failure.reason
            server.close()
        refused = Instance(name="peer-y", counterpart="mio", base_url=f"http://127.0.0.1:{free_port()}", keys=[],
                           require_signatures=False)
        with pytest.raises(ConnectionRefused) as caught:
            await transport.send(refused, request)
        assert classify_transport_error(caught.value).reason.startswith("refused: ")  # nothing was sent
    finally:
        await transport.aclose()


def test_a_half_open_breaker_probes_with_the_deliveries_that_failed() -> None:
    breaker = CircuitBreaker()
    policy = BreakerPolicy(failure_threshold=3, reset_after_s=1.0)
    for delivery_id in (11, 12, 11, 13):
        breaker.failure("mio-kz-35", policy, now=0.0, delivery_id=delivery_id)
    assert breaker.is_open("mio-kz-35", now=0.5)
    assert not breaker.blocked("mio-kz-35", now=1.5) and breaker.is_half_open("mio-kz-35")
    assert breaker.probes("mio-kz-35") == (13, 11, 12)  # newest first, each once, at most three
    breaker.success("mio-kz-35")
    assert breaker.probes("mio-kz-35") == () and breaker.state("mio-kz-35", now=2.0) == "closed"


# --- a full disk, over HTTP ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    why = mount_small_disk(disk, size="32m")
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (mandatory in CI)")
        pytest.skip(why)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_store_that_cannot_write_answers_503_with_retry_after_and_a_soap_fault_for_con(
        tmp_path: Path, small_disk: Path) -> None:
    stack = Stack(tmp_path, f"sqlite+aiosqlite:///{small_disk / 'gw.db'}")
    try:
        stack.start_gateway()
        samples = SampleCases(seed=3)
        assert stack.client.post("/v1/messages", json=samples.case()[0]).status_code == 202
        filler = fill_disk(small_disk)
        case = samples.case()[0]
        r = stack.client.post("/v1/messages", json=case)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json" and int(r.headers["retry-after"]) > 0
        problem = r.json()
        assert problem["type"].endswith(":store-unavailable") and problem["reason"] == "disk full", problem
        # ЦОН's callback endpoint speaks SOAP: the refusal of this unsigned call cannot be logged, so it is a 503,
        # as a SOAP Fault.
        fault = httpx.post(f"{stack.gateway_url}/v1/inbound/con", content=b"<Envelope/>",
                           headers={"content-type": "text/xml"})
        assert fault.status_code == 503 and fault.headers["content-type"].startswith("text/xml"), fault.text
        assert b"Fault" in fault.content and b"store-unavailable" in fault.content and "retry-after" in fault.headers
        assert httpx.get(f"{stack.gateway_url}/healthz").status_code == 200
        filler.unlink()
        again = wait_for(lambda: (r := stack.client.post("/v1/messages", json=case)).status_code == 202 and r,
                         timeout=20, what="the same message accepted once there is space")
        assert again.json()["message_id"] == case["message_id"]
        assert stack.client.get(f"/v1/messages/{case['message_id']}").status_code == 200
        wait_for(lambda: httpx.get(f"{stack.gateway_url}/readyz").status_code == 200, timeout=10, what="ready")
    finally:
        stack.close()
