"""deploy/: the environment file names every setting with a comment; the systemd units are hardened and verify."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ROOT, Settings

ENV_EXAMPLE = ROOT / "deploy" / "gateway.env.example"
UNITS = ROOT / "deploy" / "systemd"
SETTING = re.compile(r"^#?(GATEWAY_[A-Z0-9_]+)=")


def test_the_environment_file_has_every_setting_once_with_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    named = []
    for i, line in enumerate(lines):
        match = SETTING.match(line)
        if match:
            named.append(match[1])
            above = lines[i - 1]
            assert above.startswith("# ") or SETTING.match(above), f"{match[1]}: no comment above it"
    expected = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    assert sorted(named) == sorted(set(named)), "a setting appears twice"
    assert set(named) == expected, {"missing": expected - set(named), "unknown": set(named) - expected}


def test_the_units_run_as_a_dedicated_user_and_write_only_the_state_home() -> None:
    home = next(line.split("=", 1)[1] for line in ENV_EXAMPLE.read_text().splitlines()
                if line.startswith("GATEWAY_HOME="))
    for unit in ("gateway.service", "gateway-worker@.service"):
        text = (UNITS / unit).read_text(encoding="utf-8")
        for option in ("User=gateway", "NoNewPrivileges=yes", "ProtectSystem=strict", f"ReadWritePaths={home}",
                       "EnvironmentFile=/etc/gateway/gateway.env"):
            assert f"\n{option}\n" in text, f"{unit}: {option}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    # The units name the installed command; here it is this environment's (verify checks it is executable).
    gateway = Path(sys.executable).with_name("gateway")
    for unit in UNITS.glob("*.service"):
        text = unit.read_text(encoding="utf-8").replace("/opt/gateway/venv/bin/gateway", str(gateway))
        (tmp_path / unit.name.replace("@.", "@1.")).write_text(text, encoding="utf-8")
    out = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
