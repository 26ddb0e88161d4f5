"""`gateway audit verify` over a 1,000,000-record exchange log, online (SQLite) and offline, against reading alone.

Usage: .venv/bin/python -m bench.audit_verify [--records 1000000] [--keep DIR]
"""

# The log is built by the real `append` (batches of 10,000, one INSERT each) with a signed checkpoint
# every 100,000 records; two records in three keep raw request and response bodies, the rest are
# metadata-only. Baselines in the same run: paging through every row with the verifier's own queries
# (no hashing), and reading + parsing every line of the export file. The commands run in their own
# process, start-up included, as an auditor runs them.

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import create_engine

from gateway.audit.chain import LogEntry, append, sha256_hex, signer_for_key, write_checkpoint
from gateway.audit.stream import stream_connection
from gateway.config import ROOT
from gateway.storage.db import create_engines, migrate
from security.keys import public_jwk
from security.pii import PiiCipher

TARGET_S = 30.0
BATCH = 10_000
CHECKPOINT_EVERY = 100_000
T0 = datetime(2026, 3, 2, 4, 15, tzinfo=timezone.utc)
KINDS = ("received", "attempt", "attempt", "callback", "read")
PEERS = ("mio-almaty", "mio-astana", "con", "mtszn", "health", "probation-is")


def _entries(start: int, count: int, pii: PiiCipher) -> list[LogEntry]:
    out = []
    for i in range(start, start + count):
        keep = i % 3 != 2
        request = (f'{{"message_id":"{uuid.UUID(int=i)}","type":"referral.requested","occurred_at":'
                   f'"2026-03-02T09:15:00+05:00","case":{{"case_id":"PRB-2026-{i % 200_000:06d}","region":"KZ-75"}},'
                   f'"referral":{{"kind":"housing.social","domain":"housing","risk_id":"R-{i % 97}","priority":"high",'
                   f'"note":"Освобождён, нуждается во временном жилье; документы восстановлены"}}}}').encode()
        response = f'{{"status":"accepted","reference":"MIO-{i:09d}"}}'.encode()
        out.append(LogEntry(
            at=T0 + timedelta(milliseconds=37 * i), kind=KINDS[i % len(KINDS)], message_id=str(uuid.UUID(int=i)),
            delivery_id=i // 2 if i % 5 else None, case_id=f"PRB-2026-{i % 200_000:06d}", peer=PEERS[i % len(PEERS)],
            client="probation-is" if i % 4 == 0 else None, signer="Yk3mQ0eC1rT8uV5xZ2aB4dF6gH9jK7lN0pS3wE1qR5t",
            iin_hash=pii.hash(f"{900101300000 + i % 50_000}"), status_code=200 if i % 11 else 503,
            result="delivered" if i % 11 else "retry",
            request_raw=request if keep else None, request_hash=None if keep else sha256_hex(request),
            response_raw=response if keep else None, response_hash=None if keep else sha256_hex(response),
            detail=f'{{"attempt":{i % 3 + 1},"latency_ms":{i % 900}}}'))
    return out


def build(path: Path, records: int, key: ed25519.Ed25519PrivateKey) -> float:
    import asyncio

    url = f"sqlite+aiosqlite:///{path}"
    engines = create_engines(url)
    asyncio.run(migrate(engines))
    pii = PiiCipher({"k1": os.urandom(32)}, hash_key=os.urandom(32))
    sign = signer_for_key("bench-key", key)
    writer = engines.sqlite_writer
    assert writer is not None
    start = time.perf_counter()
    for first in range(0, records, BATCH):
        entries = _entries(first, min(BATCH, records - first), pii)
        with writer.begin() as conn:
            append(conn, entries)
            if (first + len(entries)) % CHECKPOINT_EVERY == 0 or first + len(entries) == records:
                write_checkpoint(conn, sign=sign, now=entries[-1].at)
        print(f"\r  built {first + len(entries):,} records", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    elapsed = time.perf_counter() - start
    asyncio.run(engines.dispose())
    return elapsed


def read_rows_only(path: Path) -> tuple[float, int]:
    """Baseline: the verifier's own keyset-paged queries over every row, no hashing."""
    engine = create_engine(f"sqlite:///{path}")
    start = time.perf_counter()
    with engine.connect() as conn:
        records, cps = stream_connection(conn)
        count = sum(1 for _ in records)
        for _ in cps:
            pass
    engine.dispose()
    return time.perf_counter() - start, count


def parse_file_only(path: Path) -> tuple[float, int]:
    """Baseline: read and parse every line of the export file."""
    start = time.perf_counter()
    count = 0
    with path.open("rb") as fh:
        for line in fh:
            orjson.loads(line)
            count += 1
    return time.perf_counter() - start, count


def _command(name: str) -> list[str]:
    """`gateway audit verify` itself once registered; until then the same function in a bare Typer app."""
    from gateway.cli.audit import audit_app

    if name == "verify" and any(c.name == "verify" for c in audit_app.registered_commands):
        return [sys.executable, "-m", "gateway", "audit", "verify"]
    code = ("import typer; from gateway.cli.audit_verify import verify, export_log; "
            "app = typer.Typer(); app.command('verify')(verify); app.command('export')(export_log); app()")
    return [sys.executable, "-c", code, name]


def cli(name: str, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """One `gateway audit ...` command in its own process; (seconds, result)."""
    start = time.perf_counter()
    done = subprocess.run([*_command(name), *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, GATEWAY_KEY_PASSPHRASE=""))
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`{name} {' '.join(args)}` exited {done.returncode}: {done.stderr}")
    return elapsed, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build in (or reuse from) this directory")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db, export, key_file, jwks = (work / "log.db", work / "chain.jsonl", work / "bench-key.pem", work / "jwks.json")
    if db.exists() and key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        build_s = None
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        build_s = build(db, args.records, key)
    jwks.write_text(json.dumps({"keys": [dict(public_jwk(key.public_key()), kid="bench-key")]}))

    url = f"sqlite+aiosqlite:///{db}"
    rows_s, rows = read_rows_only(db)
    online_s, online = cli("verify", "--database-url", url, "--jwks", str(jwks), "--no-progress")
    export_s, _ = cli("export", "--database-url", url, "-o", str(export), "--no-progress")
    parse_s, lines = parse_file_only(export)
    offline_s, offline = cli("verify", "--file", str(export), "--jwks", str(jwks), "--no-progress")

    print(f"records: {rows:,} ({db.stat().st_size / 2**20:,.0f} MiB SQLite, export {export.stat().st_size / 2**20:,.0f} MiB,"
          f" {lines - rows} checkpoint lines)")
    if build_s is not None:
        print(f"build through append():         {build_s:6.1f} s  {rows / build_s:10,.0f} records/s")
    print(f"baseline: read rows, no hashing {rows_s:6.1f} s  {rows / rows_s:10,.0f} records/s")
    print(f"gateway audit verify (online)   {online_s:6.1f} s  {rows / online_s:10,.0f} records/s"
          f"  {'✔' if online_s <= TARGET_S else '✘'} target ≤ {TARGET_S:.0f} s")
    print(f"gateway audit export (chain)    {export_s:6.1f} s  {rows / export_s:10,.0f} records/s")
    print(f"baseline: read + parse file     {parse_s:6.1f} s  {lines / parse_s:10,.0f} lines/s")
    print(f"gateway audit verify --file     {offline_s:6.1f} s  {rows / offline_s:10,.0f} records/s"
          f"  {'✔' if offline_s <= TARGET_S else '✘'} target ≤ {TARGET_S:.0f} s")
    print(f"  online:  {online.stdout.strip()}")
    print(f"  offline: {offline.stdout.strip()}")
    if args.keep is None:
        for path in (db, export, key_file, jwks, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        work.rmdir()


if __name__ == "__main__":
    main()
