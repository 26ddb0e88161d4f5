"""A throw-away PostgreSQL cluster (initdb + pg_ctl in a temporary directory, on a free port) to stop and restart."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.harness import free_port

BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
RUN_AS = "postgres"  # initdb refuses to run as root


def find_binary(name: str) -> str | None:
    for directory in BIN_DIRS:
        path = Path(directory) / name
        if path.exists():
            return str(path)
    return shutil.which(name)


def unavailable_reason() -> str | None:
    """Why a cluster cannot be made here, or None."""
    if find_binary("initdb") is None or find_binary("pg_ctl") is None:
        return "initdb/pg_ctl not found (looked in " + ", ".join(BIN_DIRS) + " and PATH)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
    return None


class PgCluster:
    """`start()`, `stop()` (immediate: like a crash), `restart()`; `url` for the gateway. As root, every
    PostgreSQL command runs as the `postgres` user (runuser, else su); as anyone else, as that user."""

    def __init__(self) -> None:
        # In the system temp directory: pytest's are private to their owner, and the server runs as `postgres`.
        self.base = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._root = os.geteuid() == 0
        if self._root:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.base, user.pw_uid, user.pw_gid)
        os.chmod(self.base, 0o755)

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._root:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
            else:
                cmd = ["su", RUN_AS, "-s", "/bin/sh", "-c", subprocess.list2cmdline(cmd)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return done

    def init(self) -> "PgCluster":
        self._run(find_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            # Throw-away and on a shared machine: little memory, no fsync (a stopped server's writes are in the
            # OS cache and survive it). Commits stay synchronous: an acknowledged commit must outlive `-m immediate`.
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "fsync = off\nfull_page_writes = off\nmax_connections = 100\n"
                       "shared_buffers = 32MB\n")
        return self

    def start(self, *, timeout: float = 30) -> float:
        """Start and wait until it accepts connections; returns the monotonic time it did."""
        self._run(find_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"), "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)
        self.wait_accepting(timeout=timeout)
        return time.monotonic()

    def stop(self, *, mode: str = "immediate") -> float:
        """Stop (`immediate`: no checkpoint, connections cut, as a crash); returns the monotonic time it was down."""
        self._run(find_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        return time.monotonic()

    def running(self) -> bool:
        return self._run(find_binary("pg_ctl"), "-D", str(self.data), "status", check=False).returncode == 0

    def wait_accepting(self, *, timeout: float = 30) -> None:
        import asyncio

        async def once() -> None:
            conn = await asyncpg.connect(self.dsn, timeout=2)
            await conn.close()

        deadline = time.monotonic() + timeout
        while True:
            try:
                asyncio.run(once())
                return
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        if self.data.exists() and self.running():
            self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)
