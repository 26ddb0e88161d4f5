"""`gateway demo`: the gateway, every simulator and a steady stream of sample cases, in one process."""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from gateway.api.app import create_app
from pydantic import SecretStr

from gateway.bootstrap import build, open_keys
from gateway.cli.servers import serve_all, server, simulator_servers
from gateway.config import ROOT, Settings
from gateway.observability import configure_logging
from gateway.samples import SampleCases


async def _traffic(base_url: str, *, rate: float, duration: float) -> None:
    samples = SampleCases()
    started = time.monotonic()
    sent = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for _ in range(100):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        last = None
        while not duration or time.monotonic() - started < duration:
            case = samples.case()[0]
            for message in [case, *samples.risks(case)]:
                response = await client.post("/v1/messages", json=message)
                if response.status_code != 202:
                    print(f"demo: {response.status_code} {response.text[:200]}", file=sys.stderr)
                else:
                    last = response.json()["status_url"]
                sent += 1
            if sent and sent % 20 < 2 and last:
                print(f"demo: {sent} messages sent; latest: {last}", file=sys.stderr)
            await asyncio.sleep(1 / rate)


DEMO_PASSPHRASE = "demo only - not for production"


def _demo_keys(settings: Settings) -> Settings:
    """The demo signs like production: with its own keys, made on first run, under var/demo-keys."""
    if settings.key_passphrase is None:
        settings = settings.model_copy(update={"key_passphrase": SecretStr(DEMO_PASSPHRASE),
                                               "keys_dir": ROOT / "var" / "demo-keys"})
    keys = open_keys(settings)
    assert keys is not None
    for channel in ("json", "xml"):
        if keys.active_info(channel=channel) is None:
            keys.generate(channel=channel)
    return settings


async def run_demo(settings: Settings, *, rate: float, duration: float) -> None:
    configure_logging("WARNING")
    settings = _demo_keys(settings)
    container = build(settings)
    gateway = server(create_app(settings, container=container), host=settings.host, port=settings.port)
    sims = simulator_servers(container.mappings, gateway_url=settings.base_url)
    receiver = next((label for label, _ in sims if label.startswith("probation")), "")
    print(
        f"""gateway demo (store: {settings.database_url})
  gateway          {settings.base_url}   (API docs: {settings.base_url}/docs)
  metrics          {settings.base_url}/metrics
  a message        {settings.base_url}/v1/messages/<message_id>   (status and every hop)
  simulators       {', '.join(label for label, _ in sims)}
  Probation IS     {receiver.split()[-1] if receiver else '?'}/_sim/received   (what the receiver got)
  signing keys     {settings.keys_dir}   (public: {settings.base_url}/v1/keys; `gateway keys list`)
Ctrl-C stops.""",
        file=sys.stderr,
    )
    servers = [gateway, *(s for _, s in sims)]
    serving = asyncio.create_task(serve_all(servers))
    traffic = asyncio.create_task(_traffic(settings.base_url, rate=rate, duration=duration))
    done, _ = await asyncio.wait({serving, traffic}, return_when=asyncio.FIRST_COMPLETED)
    if traffic in done:
        traffic.result()
        await asyncio.sleep(1.0)  # let the last deliveries and callbacks land
        for s in servers:
            s.should_exit = True
    await serving
