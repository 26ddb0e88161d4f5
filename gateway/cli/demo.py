"""`gateway demo`: the gateway, every simulator and a steady stream of sample cases, in one process."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from gateway.api.app import create_app
from pydantic import SecretStr

from gateway.bootstrap import Container, build, open_keys
from gateway.clients import add_client
from gateway.mapping import load_mappings
from gateway.storage.db import migrate
from security.client import SignatureAuth
from security.parties import PartyKey, ensure_party_key
from gateway.cli.servers import serve_all, server, simulator_servers
from gateway.config import ROOT, Settings
from gateway.observability import configure_logging
from gateway.samples import SampleCases


async def _traffic(base_url: str, *, auth: httpx.Auth, rate: float, duration: float) -> None:
    samples = SampleCases()
    started = time.monotonic()
    sent = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=10, auth=auth) as client:
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
        keys_dir = ROOT / "var" / "demo-keys" if settings.keys_dir == Settings.model_fields["keys_dir"].default \
            else settings.keys_dir
        settings = settings.model_copy(update={"key_passphrase": SecretStr(DEMO_PASSPHRASE), "keys_dir": keys_dir})
    keys = open_keys(settings)
    assert keys is not None
    for channel in ("json", "xml"):
        if keys.active_info(channel=channel) is None:
            keys.generate(channel=channel)
    return settings


async def _demo_clients(container: Container) -> tuple[PartyKey, Path]:
    """The demo's Probation IS client (by key) and an admin and an auditor (tokens kept in a 0600 file)."""
    directory = container.settings.keys_dir / "clients"
    system_key = ensure_party_key(directory, "demo-probation-is")
    credentials = directory / "demo-credentials.json"
    await migrate(container.engines)
    known = {row.client_id for row in await container.clients.all()}
    saved = json.loads(credentials.read_text()) if credentials.exists() else {}
    now = datetime.now(timezone.utc)
    if "demo-probation-is" not in known:
        await add_client(clients=container.clients, client_id="demo-probation-is", roles=["system"], now=now,
                         public_key=system_key.certificate_pem(), description="the demo's Probation IS")
    for role in ("admin", "auditor"):
        name = f"demo-{role}"
        if name not in known:
            saved[f"{role}_token"] = (await add_client(clients=container.clients, client_id=name, roles=[role],
                                                       now=now, description=f"the demo's {role}")).token
    saved.update(system_client="demo-probation-is", system_key=str(directory / "demo-probation-is.key.pem"),
                 system_certificate=str(system_key.certificate_path))
    credentials.write_text(json.dumps(saved, indent=2))
    credentials.chmod(0o600)
    return system_key, credentials


async def run_demo(settings: Settings, *, rate: float, duration: float) -> None:
    configure_logging("WARNING")
    settings = _demo_keys(settings)
    mappings = load_mappings(settings.mappings_dir, counterparts_file=settings.counterparts_file)
    # The simulators first: they make the key pairs whose certificates the counterparts file pins.
    sims = simulator_servers(mappings, gateway_url=settings.base_url, counterparts_file=settings.counterparts_path)
    container = build(settings)
    system_key, credentials = await _demo_clients(container)
    gateway = server(create_app(settings, container=container), host=settings.host, port=settings.port)
    receiver = next((label for label, _ in sims if label.startswith("probation")), "")
    print(
        f"""gateway demo (store: {settings.database_url})
  gateway          {settings.base_url}   (API docs: {settings.base_url}/docs)
  console          {settings.base_url}/console/   (sign in with auditor_token or admin_token from the credentials file)
  metrics          {settings.base_url}/metrics
  a message        {settings.base_url}/v1/messages/<message_id>   (status and every hop)
  simulators       {', '.join(label for label, _ in sims)}
  Probation IS     {receiver.split()[-1] if receiver else '?'}/_sim/received   (what the receiver got)
  signing keys     {settings.keys_dir}   (public: {settings.base_url}/v1/keys; `gateway keys list`)
  credentials      {credentials}   (the Probation IS key; admin and auditor bearer tokens)
Ctrl-C stops.""",
        file=sys.stderr,
    )
    servers = [gateway, *(s for _, s in sims)]
    serving = asyncio.create_task(serve_all(servers))
    traffic = asyncio.create_task(_traffic(settings.base_url, auth=SignatureAuth(system_key.http_signer()),
                                           rate=rate, duration=duration))
    done, _ = await asyncio.wait({serving, traffic}, return_when=asyncio.FIRST_COMPLETED)
    if traffic in done:
        traffic.result()
        await asyncio.sleep(1.0)  # let the last deliveries and callbacks land
        for s in servers:
            s.should_exit = True
    await serving
