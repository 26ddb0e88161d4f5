"""Run several ASGI apps (gateway and simulators) on loopback ports in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import threading
from collections.abc import Generator
from pathlib import Path
from types import FrameType
from typing import Any, Coroutine, TypeVar

import uvicorn

import adapters.con.simulator
import adapters.health.simulator
import adapters.mio.simulator
import adapters.mtszn.simulator
from adapters.probation.simulator import create_app as probation_app
from adapters.simulation import SimSigner
from gateway.mapping import Instance, Mappings, key_file
from security.parties import ensure_party_key

T = TypeVar("T")
SIMULATORS = {"con": adapters.con.simulator, "health": adapters.health.simulator, "mio": adapters.mio.simulator, "mtszn": adapters.mtszn.simulator}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (uvicorn[standard] brings it), as uvicorn.run would."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


EXIT_OVERDUE = 70  # EX_SOFTWARE: shutdown overran its bound (a bug); what was accepted is committed anyway


class Server(uvicorn.Server):
    """uvicorn, exiting with 0 after a graceful SIGTERM/SIGINT (stock uvicorn re-raises the signal once done, so
    the process dies by it), and never taking longer than `exit_bound_s` once asked to exit."""

    exit_bound_s: float | None = None
    capture = True  # False: the caller handles SIGINT/SIGTERM (the demo stops its servers in order)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.capture or threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit and self.exit_bound_s is not None:
            watchdog = threading.Timer(self.exit_bound_s, _overdue, args=(self.exit_bound_s,))
            watchdog.daemon = True
            watchdog.start()
        super().handle_exit(sig, frame)


def _overdue(bound_s: float) -> None:
    logging.getLogger("gateway").error("shutdown overran its bound of %.0f s; exiting now", bound_s)
    os._exit(EXIT_OVERDUE)


def server(app: Any, *, host: str, port: int, log_level: str = "warning", tls_cert: Path | None = None,
           tls_key: Path | None = None, tls_key_password: str | None = None,
           client_ca: Path | None = None, shutdown_bound_s: float | None = None,
           capture_signals: bool = True) -> uvicorn.Server:
    """uvicorn for one app; with `client_ca`, the TLS handshake refuses a client without a certificate it issued."""
    tls: dict[str, Any] = {}
    if tls_cert is not None:
        tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key) if tls_key else None,
               "ssl_keyfile_password": tls_key_password}
        if client_ca is not None:
            tls |= {"ssl_ca_certs": str(client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    # Open connections get a fifth of the shutdown bound (at most 5 s); the lifespan's clean stop the rest.
    graceful = 5.0 if shutdown_bound_s is None else min(5.0, shutdown_bound_s / 5)
    # Keep-alive outlasts our Retry-After (5 s): a client resending after it on its idle connection must not
    # meet the server closing that connection at the same moment (seen as a reset, not an answer).
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="on", log_config=None, timeout_graceful_shutdown=graceful,
                            timeout_keep_alive=15, **tls)
    out = Server(config)
    out.capture = capture_signals
    if shutdown_bound_s is not None:
        out.exit_bound_s = shutdown_bound_s + 5.0  # the watchdog only fires if a bounded step did not hold
    return out


def sim_signer(inst: Instance, *, counterparts_file: Path, home: Path) -> SimSigner | None:
    """The simulator's key pair, created where the instance's first pinned certificate is expected."""
    if not inst.keys:
        return None
    pinned = key_file(inst.keys[0], counterparts_file=counterparts_file, home=home)
    if not pinned.name.endswith(".crt.pem"):
        raise ValueError(f"{inst.name}: a simulator's pinned key must be named <name>.crt.pem, not {pinned.name}")
    xml = inst.counterpart == "con"
    key = ensure_party_key(pinned.parent, pinned.name.removesuffix(".crt.pem"),
                           algorithm="ecdsa-p256" if xml else "ed25519")
    return SimSigner(key, xml=xml)


def simulator_servers(mappings: Mappings, *, gateway_url: str, counterparts_file: Path, home: Path,
                      capture_signals: bool = True) -> list[tuple[str, uvicorn.Server]]:
    """One simulator per configured instance whose base_url is on this machine, signing with its own key."""
    factories = {
        counterpart: (lambda name, signer, m=module, cp=counterpart: m.create_app(
            name=name, callback_url=f"{gateway_url}/v1/inbound/{cp}", signer=signer))
        for counterpart, module in SIMULATORS.items()
    }
    factories["probation"] = lambda name, signer: probation_app(name=name, signer=signer)
    servers = []
    for inst in mappings.counterparts.instances:
        host = inst.base_url.host or ""
        if inst.counterpart not in factories or host not in ("127.0.0.1", "localhost", "::1"):
            continue
        app = factories[inst.counterpart](inst.name, sim_signer(inst, counterparts_file=counterparts_file, home=home))
        servers.append((f"{inst.name} {inst.url}", server(app, host=host, port=inst.base_url.port or 80,
                                                             capture_signals=capture_signals)))
    return servers


async def serve_all(servers: list[uvicorn.Server]) -> None:
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
    finally:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
