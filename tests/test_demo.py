"""`gateway demo` twice on one store: each run delivers, and SIGINT or SIGTERM ends it cleanly with 0."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.demo_run import assert_clean, demo_setup, run_demo_until_delivered

DEMO = [sys.executable, "-m", "gateway", "demo", "--rate", "4"]


def test_demo_reruns_on_the_same_store_deliver_and_stop_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    setup = demo_setup(tmp_path, home=home)
    first = run_demo_until_delivered(DEMO, setup, cwd=tmp_path, stop=signal.SIGINT)
    assert_clean(first)
    sent: list[subprocess.CompletedProcess[str]] = []
    doctor: list[subprocess.CompletedProcess[str]] = []

    def send_one(output: str) -> None:  # the command printed for the Probation IS, run as printed
        line = next(line for line in output.splitlines() if line.strip().startswith("send one "))
        sent.append(subprocess.run(shlex.split(line.strip().removeprefix("send one")), capture_output=True, text=True,
                                   timeout=60))
        # and the doctor, on the demo's configuration while its counterparts run
        doctor.append(subprocess.run([sys.executable, "-m", "gateway", "doctor", "--demo"], env=setup.env,
                                     cwd=tmp_path, capture_output=True, text=True, timeout=60))

    second = run_demo_until_delivered(DEMO, setup, cwd=tmp_path, stop=signal.SIGTERM, while_running=send_one)
    assert_clean(second)
    assert sent and sent[0].returncode == 0 and sent[0].stdout.startswith("202 "), sent
    assert doctor[0].returncode == 0, doctor[0].stdout + doctor[0].stderr
    checked = doctor[0].stdout.splitlines()
    assert not [line for line in checked if line.startswith("FAIL")]
    for name in ("signing key (json)", "signing key (xml)", "database", "mappings", "counterpart probation",
                 "  pinned key probation.0", "tls", "console"):
        assert any(line[6:].startswith(name) for line in checked), (name, checked)
    # The second run's deliveries are its own messages, not the first run's again.
    assert not set(second.received) & set(first.received)
    assert "sqlite+aiosqlite:///" + str(home / "gateway.db") in second.output

    # What each kind of user does first is printed, and points at files that exist.
    credentials = json.loads((home / "demo-keys" / "clients" / "demo-credentials.json").read_text())
    assert {"admin_token", "auditor_token"} <= set(credentials)
    key_line = next(line for line in second.output.splitlines() if line.strip().startswith("key "))
    assert Path(key_line.split()[-1]).is_file()
    assert f"http://127.0.0.1:{setup.port}/console/" in second.output
    assert "examples/send_message.py --url" in second.output and "--keyid " in second.output
    # Nothing of the demo's state outside its home.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counterparts.yaml", "home", "logs"]
