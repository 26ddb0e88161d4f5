"""Run several ASGI apps (gateway and simulators) on loopback ports in one event loop."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

import uvicorn

import adapters.con.simulator
import adapters.health.simulator
import adapters.mio.simulator
import adapters.mtszn.simulator
from adapters.probation.simulator import create_app as probation_app
from gateway.mapping import Mappings

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


def server(app: Any, *, host: str, port: int, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="on", log_config=None, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def simulator_servers(mappings: Mappings, *, gateway_url: str) -> list[tuple[str, uvicorn.Server]]:
    """One simulator per configured instance whose base_url is on this machine."""
    factories = {
        counterpart: (lambda name, m=module, cp=counterpart: m.create_app(
            name=name, callback_url=f"{gateway_url}/v1/inbound/{cp}"))
        for counterpart, module in SIMULATORS.items()
    }
    factories["probation"] = lambda name: probation_app(name=name)
    servers = []
    for inst in mappings.counterparts.instances:
        host = inst.base_url.host or ""
        if inst.counterpart not in factories or host not in ("127.0.0.1", "localhost", "::1"):
            continue
        servers.append((f"{inst.name} {inst.url}", server(factories[inst.counterpart](inst.name), host=host,
                                                           port=inst.base_url.port or 80)))
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
