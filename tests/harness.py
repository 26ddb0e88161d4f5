"""Test harness: real servers on loopback (in a thread or a child process) and stack configuration."""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from adapters.mio.simulator import create_app as mio_app
from adapters.probation.simulator import create_app as probation_app
from adapters.simulation import SimSigner
from gateway.api.app import create_app
from gateway.clients import add_client
from gateway.config import ROOT, Settings
from gateway.storage.clients import ClientStore
from gateway.storage.db import create_engines, migrate
from gateway.storage.store import Store
from security.client import SignatureAuth
from security.parties import PartyKey, ensure_party_key


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with bound_socket() as s:
        return s.getsockname()[1]


class ThreadServer:
    """An ASGI app served by uvicorn on a loopback socket, in a thread with its own event loop."""

    def __init__(self, app: Any, sock: socket.socket | None = None) -> None:
        self.app = app
        self.sock = sock or bound_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                                    log_config=None, timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def write_counterparts(path: Path, instances: list[dict[str, Any]]) -> Path:
    """The counterparts file; an instance without `keys` pins peer-keys/<name>.crt.pem beside the file."""
    for inst in instances:
        inst.setdefault("keys", [str(path.parent / "peer-keys" / f"{inst['name']}.crt.pem")])
    path.write_text(yaml.safe_dump({"version": 1, "instances": instances}, allow_unicode=True), encoding="utf-8")
    return path


def default_counterparts(tmp: Path) -> Path:
    """The shipped counterparts.yaml with each instance's key pair made under tmp/peer-keys (for stores never sent to)."""
    doc = yaml.safe_load((ROOT / "gateway" / "mappings" / "counterparts.yaml").read_text(encoding="utf-8"))
    for inst in doc["instances"]:
        ensure_party_key(tmp / "peer-keys", inst["name"], algorithm="ecdsa-p256")
        inst.pop("keys", None)
    return write_counterparts(tmp / "counterparts.yaml", doc["instances"])


FAST_RETRY = {"max_attempts": 6, "base_delay_s": 0.05, "max_delay_s": 2.0, "deadline_s": 120, "retry_after_max_s": 10}


@dataclass
class Stack:
    """Gateway + МИО simulator (region KZ-35) + Probation IS receiver, all on real loopback HTTP."""

    tmp: Path
    database_url: str
    retry: dict[str, Any] = field(default_factory=lambda: dict(FAST_RETRY))
    gateway_sock: socket.socket = field(default_factory=bound_socket)
    servers: list[ThreadServer] = field(default_factory=list)
    national: tuple[str, ...] = ()  # also run these national counterparts' simulators: con, mtszn, health
    sims: dict[str, ThreadServer] = field(default_factory=dict)
    wrap: Any = None  # wraps the МИО and Probation IS simulators' apps (an independent capture, say)

    def __post_init__(self) -> None:
        wrap = self.wrap or (lambda app: app)
        self.gateway_port = self.gateway_sock.getsockname()[1]
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.keys_dir = self.tmp / "peer-keys"
        self.mio = ThreadServer(wrap(mio_app(name="mio-kz-35", callback_url=f"{self.gateway_url}/v1/inbound/mio",
                                             signer=self.sim_signer("mio-kz-35")))).start()
        self.probation = ThreadServer(wrap(probation_app(signer=self.sim_signer("probation")))).start()
        self.servers += [self.mio, self.probation]
        instances = [
            {"name": "probation", "counterpart": "probation", "base_url": self.probation.url,
             "retry": self.retry, "timeout_s": 5, "keys": [self.pin("probation")]},
            {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": self.mio.url,
             "retry": self.retry, "timeout_s": 5, "keys": [self.pin("mio-kz-35")]},
        ]
        for counterpart in self.national:
            module = importlib.import_module(f"adapters.{counterpart}.simulator")
            sim = ThreadServer(module.create_app(
                name=counterpart, callback_url=f"{self.gateway_url}/v1/inbound/{counterpart}",
                signer=self.sim_signer(counterpart, xml=counterpart == "con"))).start()
            self.sims[counterpart] = sim
            self.servers.append(sim)
            instances.append({"name": counterpart, "counterpart": counterpart, "base_url": sim.url,
                              "retry": self.retry, "timeout_s": 5, "keys": [self.pin(counterpart)]})
        self.sims["mio"] = self.mio
        self.counterparts = write_counterparts(self.tmp / "counterparts.yaml", instances)
        # The Probation IS signs with its key; an admin and an auditor hold tokens.
        self.system_key = ensure_party_key(self.keys_dir, "probation-is")
        tokens = provision_clients(self.database_url, system_key=self.system_key)
        self.admin_token, self.auditor_token = tokens["admin"], tokens["auditor"]
        self.auth = SignatureAuth(self.system_key.http_signer())
        self.client = httpx.Client(base_url=self.gateway_url, auth=self.auth, timeout=30)
        self.admin = bearer_client(self.gateway_url, self.admin_token)
        self.auditor = bearer_client(self.gateway_url, self.auditor_token)

    def peer_client(self, name: str) -> httpx.Client:
        """A client signing as the peer `name` (a counterpart instance, say) with its key in peer-keys/."""
        auth = SignatureAuth(ensure_party_key(self.keys_dir, name).http_signer())
        return httpx.Client(base_url=self.gateway_url, auth=auth, timeout=30)

    def sim_signer(self, name: str, *, xml: bool = False) -> SimSigner:
        return SimSigner(ensure_party_key(self.keys_dir, name, algorithm="ecdsa-p256" if xml else "ed25519"), xml=xml)

    def pin(self, name: str) -> str:
        return str(self.keys_dir / f"{name}.crt.pem")

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = dict(database_url=self.database_url, counterparts_file=self.counterparts,
                                      public_url=self.gateway_url, worker_poll_interval_s=0.1)
        values.update(overrides)
        return Settings(**values)

    def start_gateway(self, **overrides: Any) -> ThreadServer:
        gw = ThreadServer(create_app(self.settings(**overrides)), sock=self.gateway_sock).start()
        self.servers.append(gw)
        self.gateway = gw
        return gw

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GATEWAY_DATABASE_URL=self.database_url,
            GATEWAY_COUNTERPARTS_FILE=str(self.counterparts),
            GATEWAY_WORKER_POLL_INTERVAL_S="0.1",
            GATEWAY_LOG_LEVEL="WARNING",
        )
        env.update(extra)
        return env

    def spawn_gateway(self, port: int, **env: str) -> subprocess.Popen:
        """A gateway in its own process (to kill it, or to run two on one database)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            env=self.env(GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{port}", **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"gateway-{port}.log", "ab"),
        )
        wait_ready(f"http://127.0.0.1:{port}", proc=proc)
        return proc

    def close(self) -> None:
        for c in (self.client, self.admin, self.auditor):
            c.close()
        for s in reversed(self.servers):
            s.stop()


def bearer_client(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def provision_clients(database_url: str, *, system_key: PartyKey) -> dict[str, str]:
    """Migrate the store and add the stack's clients: the Probation IS (by key), an admin and an auditor."""

    async def main() -> dict[str, str]:
        engines = create_engines(database_url)
        store = Store(engines)
        try:
            await migrate(engines)
            clients = ClientStore(store)
            now = datetime.now(timezone.utc)
            await add_client(clients=clients, client_id="probation-is", roles=["system"], now=now,
                             public_key=system_key.certificate_pem())
            tokens = {}
            for role in ("admin", "auditor"):
                added = await add_client(clients=clients, client_id=f"{role}-1", roles=[role], now=now)
                tokens[role] = added.token or ""
            return tokens
        finally:
            await store.committer.stop()
            await engines.dispose()

    return asyncio.run(main())


def wait_ready(url: str, *, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway process exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def wait_for(predicate: Any, *, timeout: float = 20, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def sim_stats(sim: ThreadServer) -> dict[str, Any]:
    return httpx.get(f"{sim.url}/_sim/stats").json()


def sim_config(sim: ThreadServer, **cfg: Any) -> None:
    httpx.post(f"{sim.url}/_sim/config", json=cfg).raise_for_status()
