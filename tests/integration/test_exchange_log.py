"""Every hop of real traffic lands in the hash-chained exchange log: sealed wire bytes, verified signers, refusals."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gateway.config import ROOT
from gateway.samples import SampleCases
from security.keys import KeyStore
from tests.harness import Stack, wait_for

PASSPHRASE = "test-only passphrase"


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Stack]:
    KeyStore(tmp_path / "keys", passphrase=PASSPHRASE).generate(channel="json")
    s = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
    try:
        s.start_gateway(keys_dir=tmp_path / "keys", key_passphrase=PASSPHRASE, audit_checkpoint_interval_s=0.2)
        yield s
    finally:
        s.close()


def _log(stack: Stack) -> list[dict]:
    path = stack.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM exchange_log ORDER BY seq")]


def _verify(stack: Stack, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, GATEWAY_KEYS_DIR=str(tmp_path / "keys"), GATEWAY_KEY_PASSPHRASE=PASSPHRASE)
    return subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", "--database-url", stack.database_url,
                           "--no-progress"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_traffic_is_chained_with_sealed_bytes_and_verifies(logged: Stack, tmp_path: Path) -> None:
    samples = SampleCases(seed=71)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    referral = samples.shelter_referral(case["case_id"])
    iin = case["body"]["person"]["iin"]
    for message in (case, referral):
        assert logged.client.post("/v1/messages", json=message).status_code == 202
    wait_for(lambda: any(m["type"] == "referral.completed"
                         for m in httpx.get(f"{logged.probation.url}/_sim/received").json()), what="completion")
    assert httpx.post(f"{logged.gateway_url}/v1/messages", json=case).status_code == 401  # unsigned: refused

    def kinds() -> set[str]:
        return {r["kind"] for r in _log(logged)}

    wait_for(lambda: {"received", "attempt", "reply", "refused"} <= kinds(), what="every kind of hop")
    rows = _log(logged)
    received = next(r for r in rows if r["kind"] == "received" and r["message_id"] == case["message_id"])
    assert received["client"] == "probation-is" and received["signer"] == logged.system_key.kid
    assert received["case_id"] == case["case_id"] and len(received["iin_hash"]) == 64
    callback = next(r for r in rows if r["kind"] == "received" and r["client"] == "counterpart:mio-kz-35")
    assert callback["signer"] and callback["request_raw"]
    attempt = next(r for r in rows if r["kind"] == "attempt" and r["peer"] == "mio-kz-35")
    assert attempt["request_raw"] and attempt["response_raw"] and attempt["signer"]
    refused = next(r for r in rows if r["kind"] == "refused")
    assert refused["request_raw"] is None and len(refused["request_hash"]) == 64  # a digest, never the payload
    # wire bytes are sealed at rest: neither the IIN nor the person's name is readable in the log
    for row in rows:
        for column in ("request_raw", "response_raw", "detail"):
            value = row[column]
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
            assert iin not in text and case["body"]["person"]["surname"] not in text, (row["kind"], column)

    logged.gateway.stop()  # the last checkpoint is written on the way out
    result = _verify(logged, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "checkpoint" in result.stdout + result.stderr
