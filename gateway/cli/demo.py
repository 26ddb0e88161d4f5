"""`gateway demo`: the gateway, every simulator and a steady stream of sample cases, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
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
from gateway.cli.servers import server, simulator_servers
from gateway.config import ROOT, Settings
from gateway.observability import configure_logging
from gateway.samples import SampleCases


async def _traffic(base_url: str, *, auth: httpx.Auth, rate: float, duration: float, stop: asyncio.Event) -> None:
    """Sample cases at `rate` per second until `stop` is set (or `duration` passed); ids new on every run."""
    # A seed of its own per run: the store keeps earlier runs' message ids, which must never come back.
    samples = SampleCases(seed=secrets.randbits(64))
    deadline = time.monotonic() + (duration or float("inf"))
    sent = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=10, auth=auth) as client:
        last = None
        while not stop.is_set() and time.monotonic() < deadline:
            case = samples.case()[0]
            for message in [case, *samples.risks(case)]:
                try:
                    response = await client.post("/v1/messages", json=message)
                except httpx.HTTPError as exc:
                    print(f"demo: {message['message_id']} not sent: {exc!r}", file=sys.stderr)
                    continue
                if response.status_code != 202:
                    print(f"demo: {response.status_code} {response.text[:200]}", file=sys.stderr)
                else:
                    last = response.json()["status_url"]
                sent += 1
            if sent and sent % 20 < 2 and last:
                print(f"demo: {sent} messages sent; latest: {last}", file=sys.stderr)
            with contextlib.suppress(TimeoutError):  # paces the stream; a stop ends the wait at once
                await asyncio.wait_for(stop.wait(), timeout=1 / rate)


async def _until_ready(base_url: str, *, stop: asyncio.Event, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)
    return False


DEMO_PASSPHRASE = "demo only - not for production"


def demo_settings(settings: Settings) -> Settings:
    """The demo's settings: unless a passphrase is set, its own one and keys under GATEWAY_HOME/demo-keys."""
    if settings.key_passphrase is not None:
        return settings
    keys_dir = settings.keys_dir if "keys_dir" in settings.model_fields_set else settings.home / "demo-keys"
    return settings.model_copy(update={"key_passphrase": SecretStr(DEMO_PASSPHRASE), "keys_dir": keys_dir})


def _demo_keys(settings: Settings) -> Settings:
    """The demo signs like production: with its own keys, made on first run."""
    settings = demo_settings(settings)
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


def _first_steps(settings: Settings, *, sims: list[str], credentials: Path, system_key: PartyKey) -> str:
    """What each kind of user does first, printed once the demo is up."""
    url = settings.base_url
    client = ROOT / "examples" / "send_message.py"
    send = (f"{sys.executable} {client} --url {url} --key {system_key.directory / (system_key.name + '.key.pem')} "
            f"--keyid {system_key.kid}" if client.is_file()
            else "examples/send_message.py of the source repository (needs httpx and http-message-signatures)")
    receiver = next((label.split()[-1] for label in sims if label.startswith("probation")), "?")
    return f"""gateway demo (store: {settings.database_url})
  gateway          {url}   (API docs: {url}/docs; metrics: {url}/metrics)
  simulators       {', '.join(sims)}

Auditor and administrator: open the console and sign in with a token
  console          {url}/console/
  credentials      {credentials}   (auditor_token, admin_token)

Probation IS (an integrator): sign requests with this key (RFC 9421, Ed25519)
  key              {system_key.directory / (system_key.name + '.key.pem')}
  keyid            {system_key.kid}
  send one         {send}
  a message        {url}/v1/messages/<message_id>   (status and every hop)
  what it got      {receiver}/_sim/received   (the Probation IS receiver)

Operator
  state            {settings.home}   (GATEWAY_HOME; signing keys in {settings.keys_dir})
  check            gateway doctor --demo   (production: gateway doctor --env-file /etc/gateway/gateway.env)

Ctrl-C stops."""


async def run_demo(settings: Settings, *, rate: float, duration: float) -> None:
    configure_logging("WARNING")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _run(settings, rate=rate, duration=duration, stop=stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(settings: Settings, *, rate: float, duration: float, stop: asyncio.Event) -> None:
    settings = _demo_keys(settings)
    mappings = load_mappings(settings.mappings_dir, counterparts_file=settings.counterparts_file)
    # The simulators first: they make the key pairs whose certificates the counterparts file pins.
    sims = simulator_servers(mappings, gateway_url=settings.base_url, counterparts_file=settings.counterparts_path,
                             home=settings.home, capture_signals=False)
    container = build(settings)
    system_key, credentials = await _demo_clients(container)
    gateway = server(create_app(settings, container=container), host=settings.host, port=settings.port,
                     capture_signals=False)
    sim_tasks = [asyncio.create_task(s.serve()) for _, s in sims]
    gateway_task = asyncio.create_task(gateway.serve())
    ready = await _until_ready(settings.base_url, stop=stop)
    if ready:
        print(_first_steps(settings, sims=[label for label, _ in sims], credentials=credentials,
                           system_key=system_key), file=sys.stderr)
        traffic = asyncio.create_task(_traffic(settings.base_url, auth=SignatureAuth(system_key.http_signer()),
                                               rate=rate, duration=duration, stop=stop))
        stopping = asyncio.create_task(stop.wait())
        # Until a signal, the end of --duration, or a server that could not go on.
        await asyncio.wait({stopping, traffic, gateway_task, *sim_tasks}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await traffic
        await stopping
    # The gateway first, so nothing it still sends meets a simulator already gone; then the simulators.
    gateway.should_exit = True
    await asyncio.gather(gateway_task, return_exceptions=True)
    for _, s in sims:
        s.should_exit = True
    failed = [r for r in await asyncio.gather(gateway_task, *sim_tasks, return_exceptions=True)
              if isinstance(r, BaseException)]
    if failed:
        raise DemoFailed(f"a server of the demo failed: {failed[0]!r}")
    if not ready and not stop.is_set():
        raise DemoFailed(f"the gateway did not answer {settings.base_url}/readyz")


class DemoFailed(Exception):
    """A server of the demo did not start or ended on its own."""
