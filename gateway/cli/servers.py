"""Run several ASGI apps (gateway and simulators) on loopback ports in one event loop."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, Coroutine, TypeVar

import uvicorn

import adapters.con.simulator
import adapters.health.simulator
import adapters.mio.simulator
import adapters.mtszn.simulator
from adapters.probation.simulator import create_app as probation_app
from adapters.simulation import SimSigner
from gateway.mapping import Instance, Mappings
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


def server(app: Any, *, host: str, port: int, log_level: str = "warning", tls_cert: Path | None = None,
           tls_key: Path | None = None, tls_key_password: str | None = None,
           client_ca: Path | None = None) -> uvicorn.Server:
    """uvicorn for one app; with `client_ca`, the TLS handshake refuses a client without a certificate it issued."""
    tls: dict[str, Any] = {}
    if tls_cert is not None:
        tls = {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key) if tls_key else None,
               "ssl_keyfile_password": tls_key_password}
        if client_ca is not None:
            tls |= {"ssl_ca_certs": str(client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="on", log_config=None, timeout_graceful_shutdown=5, **tls)
    return uvicorn.Server(config)


def sim_signer(inst: Instance, *, counterparts_file: Path) -> SimSigner | None:
    """The simulator's key pair, created where the instance's first pinned certificate is expected."""
    if not inst.keys:
        return None
    pinned = (counterparts_file.parent / inst.keys[0]).resolve()
    if not pinned.name.endswith(".crt.pem"):
        raise ValueError(f"{inst.name}: a simulator's pinned key must be named <name>.crt.pem, not {pinned.name}")
    xml = inst.counterpart == "con"
    key = ensure_party_key(pinned.parent, pinned.name.removesuffix(".crt.pem"),
                           algorithm="ecdsa-p256" if xml else "ed25519")
    return SimSigner(key, xml=xml)


def simulator_servers(mappings: Mappings, *, gateway_url: str, counterparts_file: Path
                      ) -> list[tuple[str, uvicorn.Server]]:
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
        app = factories[inst.counterpart](inst.name, sim_signer(inst, counterparts_file=counterparts_file))
        servers.append((f"{inst.name} {inst.url}", server(app, host=host, port=inst.base_url.port or 80)))
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
