"""Each transport failure gets its own reason class, each made with a real socket on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from gateway.mapping import Instance
from gateway.pipeline.ports import WireRequest
from gateway.pipeline.retry import classify_transport_error, reason_class
from gateway.pipeline.transport import HttpxTransport
from tests.harness import bound_socket, free_port

REQUEST = WireRequest("POST", "/referrals", (("content-type", "application/json"),), b"{}")


def _instance(url: str, *, timeout_s: float = 1.0) -> Instance:
    return Instance(name="mio-kz-35", counterpart="mio", base_url=url, timeout_s=timeout_s,
                    require_signatures=False)


async def _failure(url: str, *, timeout_s: float = 1.0) -> str:
    transport = HttpxTransport()
    try:
        with pytest.raises(Exception) as caught:
            await transport.send(_instance(url, timeout_s=timeout_s), REQUEST)
        return classify_transport_error(caught.value).reason
    finally:
        await transport.aclose()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and reads, never answers: the request arrived, the answer does not come."""
    sock = bound_socket()
    sock.listen(16)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A listening socket nobody accepts on, its backlog already full: a new connection's SYN goes unanswered."""
    sock = bound_socket()
    sock.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(sock.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield sock.getsockname()[1]
    for filler in fillers:
        filler.close()
    sock.close()


async def test_a_refused_connection_is_not_a_timeout() -> None:
    reason = await _failure(f"http://127.0.0.1:{free_port()}")
    assert reason_class(reason) == "refused", reason


async def test_a_name_that_does_not_resolve() -> None:
    reason = await _failure("http://counterpart.invalid:8080")  # .invalid never resolves (RFC 6761)
    assert reason_class(reason) == "dns", reason


async def test_a_tls_failure() -> None:
    # TLS towards a plain HTTP simulator: the handshake fails, which is neither a timeout nor a refusal.
    from adapters.mio.simulator import create_app
    from tests.harness import ThreadServer

    server = ThreadServer(create_app(name="mio-kz-35", callback_url="http://127.0.0.1:9/")).start()
    try:
        reason = await _failure(server.url.replace("http://", "https://"))
    finally:
        server.stop()
    assert reason_class(reason) == "tls", reason


async def test_a_connect_timeout(full_backlog: int) -> None:
    reason = await _failure(f"http://127.0.0.1:{full_backlog}", timeout_s=0.5)
    assert reason_class(reason) == "connect timeout", reason


async def test_a_read_timeout(silent_server: int) -> None:
    reason = await _failure(f"http://127.0.0.1:{silent_server}", timeout_s=0.5)
    assert reason_class(reason) == "read timeout", reason


def test_stored_reasons_map_to_their_class() -> None:
    assert reason_class("counterpart answered 503; gave up after 6 attempts") == "http"
    assert reason_class("disconnected after send: ServerDisconnectedError") == "disconnected after send"
    assert reason_class(None) == "none"
