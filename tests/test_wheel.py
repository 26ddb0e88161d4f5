"""The wheel, installed into a fresh venv from the lock, runs the demo and delivers, writing nothing outside its home."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.config import ROOT
from tests.demo_run import assert_clean, demo_setup, run_demo_until_delivered

pytestmark = pytest.mark.slow  # about a minute: one wheel build, one venv from the lock, one short demo


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_the_wheel_in_a_fresh_venv_runs_the_demo_and_delivers(tmp_path: Path) -> None:
    dist, venv, run_dir = tmp_path / "dist", tmp_path / "venv", tmp_path / "run"
    run_dir.mkdir()
    pip = ("-m", "pip", "install", "-q", "--disable-pip-version-check")
    # Built from a clean copy: setuptools builds in the tree, and a stale build/ there could leak into the wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", "var", "build", "dist", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", dist, source,
         cwd=tmp_path)
    [wheel] = dist.glob("probation_gateway-*.whl")
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(python, *pip, "--require-hashes", "-r", ROOT / "requirements" / "gateway.txt", cwd=tmp_path)
    _run(python, *pip, "--no-deps", wheel, cwd=tmp_path)
    # Run from elsewhere, so an import of the checkout instead of the installed package cannot pass for it.
    env_base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    mappings = _run(venv / "bin" / "gateway", "mappings", "check", cwd=run_dir, env=env_base)
    assert str(venv) in mappings.stdout and "counterpart instances" in mappings.stdout

    before = _tree(venv)
    setup = demo_setup(tmp_path, home=None)  # the default home: ./var in the working directory
    setup.env.pop("PYTHONPATH", None)
    pages: dict[str, int] = {}

    def look(_: str) -> None:  # templates, vendored assets and migrations came with the wheel
        base = f"http://127.0.0.1:{setup.port}"
        for path in ("/console/", "/docs", "/readyz"):
            pages[path] = httpx.get(base + path, timeout=10, follow_redirects=True).status_code

    run = run_demo_until_delivered([str(venv / "bin" / "gateway"), "demo"], setup, cwd=run_dir, stop=signal.SIGINT,
                                   while_running=look)
    assert_clean(run)
    assert pages == {"/console/": 200, "/docs": 200, "/readyz": 200}
    assert sorted(p.name for p in run_dir.iterdir()) == ["var"]
    assert (run_dir / "var" / "gateway.db").is_file() and (run_dir / "var" / "sim-keys").is_dir()
    after = _tree(venv)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) ^ set(after) | {
        k for k in before if k in after and before[k] != after[k]}}
