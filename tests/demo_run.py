"""Runs `gateway demo` as a user would, on ports of its own, until its simulators have received deliveries."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from gateway.config import MAPPINGS
from tests.harness import free_port


@dataclass(frozen=True)
class DemoSetup:
    env: dict[str, str]
    port: int
    receiver: str  # the Probation IS simulator's URL
    logs: Path


def demo_setup(tmp: Path, *, home: Path | None) -> DemoSetup:
    """The shipped counterparts file on free ports (keys still pinned under $GATEWAY_HOME), and its environment."""
    doc = yaml.safe_load((MAPPINGS / "counterparts.yaml").read_text(encoding="utf-8"))
    for inst in doc["instances"]:
        inst["base_url"] = f"http://127.0.0.1:{free_port()}"
    (tmp / "logs").mkdir()
    counterparts = tmp / "counterparts.yaml"
    counterparts.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    receiver = next(i["base_url"] for i in doc["instances"] if i["counterpart"] == "probation")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_COUNTERPARTS_FILE": str(counterparts)} | ({"GATEWAY_HOME": str(home)} if home else {})
    return DemoSetup(env=env, port=free_port(), receiver=receiver, logs=tmp / "logs")


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    output: str
    received: list[str]  # message ids the Probation IS simulator recorded


def run_demo_until_delivered(command: list[str], setup: DemoSetup, *, cwd: Path, stop: signal.Signals,
                             deliveries: int = 3, within_s: float = 90,
                             while_running: Callable[[str], None] | None = None) -> DemoRun:
    """Start the demo, wait until the Probation IS simulator holds `deliveries` messages, then send `stop`.

    `while_running` is called with the output so far once the deliveries are in, before the signal.
    """
    log = setup.logs / f"demo-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--port", str(setup.port)], env=setup.env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)
        received: list[str] = []
        try:
            deadline = time.monotonic() + within_s
            while time.monotonic() < deadline and proc.poll() is None and len(received) < deliveries:
                try:
                    received = [m["message_id"] for m in httpx.get(f"{setup.receiver}/_sim/received", timeout=2).json()]
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)  # polling interval of a wait with a deadline, not a synchronisation
            if while_running is not None and len(received) >= deliveries:
                while_running(log.read_text(encoding="utf-8", errors="replace"))
            proc.send_signal(stop)
            returncode = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return DemoRun(returncode, log.read_text(encoding="utf-8", errors="replace"), received)


def assert_clean(run: DemoRun, *, deliveries: int = 3) -> None:
    assert len(run.received) >= deliveries, run.output[-3000:]
    assert run.returncode == 0, run.output[-3000:]
    for bad in ("Traceback", "Unclosed", "Task was destroyed", "message-id-conflict"):
        assert bad not in run.output, run.output[-3000:]
