"""docs/integrating.md's worked example, byte for byte: the fixed key in examples/keys, its keyid, the body, the
digest, the signature base, the signed request, and the gateway's answer at the example's time (a real gateway
on loopback with its clock set). `python -m tests.test_integration_guide` prints the blocks to paste after a
change of the profile."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.api.app import create_app
from gateway.bootstrap import build
from gateway.clients import add_client
from gateway.config import ROOT, Settings
from gateway.storage.clients import ClientStore
from gateway.storage.db import create_engines, migrate
from gateway.storage.store import Store
from tests.harness import ThreadServer, default_counterparts

sys.path.insert(0, str(ROOT / "examples"))
import reference_client as rc  # noqa: E402

GUIDE = ROOT / "docs" / "integrating.md"
KEY_FILE = ROOT / "examples" / "keys" / "example-client.key.pem"
PUBLIC_FILE = ROOT / "examples" / "keys" / "example-client.pub.pem"
PUBLIC_URL = "https://gateway.example.kz"
CREATED = datetime(2026, 1, 15, 6, 0, 0, tzinfo=timezone.utc)
RECEIVED = CREATED + timedelta(seconds=2)  # the gateway's clock when the request arrives
NONCE = "m4Qd0b1Xw8sVtZ3kLr7YpA"
MESSAGE = {
    "message_id": "0c1f5b8e-3a0d-4e57-9a4b-6d2f1e7c9a10",
    "type": "case.registered",
    "case_id": "35-2026-000117-1",
    "occurred_at": "2026-01-15T10:58:00+05:00",
    "body": {"region": "KZ-35",
             "person": {"iin": "970921436580", "surname": "Үсенова", "given_name": "Қарлығаш",
                        "birth_date": "1997-09-21", "sex": "female"},
             "release_date": "2026-01-12", "has_minor_children": False},
}
_BLOCK = re.compile(r"<!-- worked-example:([a-z-]+) -->\n```[a-z]*\n(.*?)\n```", re.S)


def guide_blocks() -> dict[str, str]:
    return dict(_BLOCK.findall(GUIDE.read_text(encoding="utf-8")))


def _key():  # noqa: ANN202
    return serialization.load_pem_private_key(KEY_FILE.read_bytes(), password=None)


def request_blocks() -> dict[str, str]:
    """Everything of the example that follows from the key and the fixed inputs alone."""
    key = _key()
    keyid = rc.keyid_of(key.public_key())
    body = json.dumps(MESSAGE, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    url = PUBLIC_URL + "/v1/messages"
    headers = rc.sign("POST", url, body, key=key, keyid=keyid, created=CREATED, nonce=NONCE)
    base = rc.signature_base("POST", url, body, key=key, keyid=keyid, created=CREATED, nonce=NONCE)
    request = "\n".join(["POST /v1/messages HTTP/1.1", "Host: gateway.example.kz",
                         *(f"{k}: {v}" for k, v in headers.items()), "", body.decode("utf-8")])
    return {
        "jwk": json.dumps(rc.public_jwk(key.public_key()), sort_keys=True, separators=(",", ":")),
        "keyid": keyid,
        "body": body.decode("utf-8"),
        "digest": headers["Content-Digest"],
        "signature-base": base.decode("ascii"),
        "request": request,
    }


def test_the_guide_shows_the_example_key_its_keyid_and_the_signed_request() -> None:
    blocks = guide_blocks()
    assert blocks["key"] + "\n" == KEY_FILE.read_text(), "the guide's key is examples/keys/example-client.key.pem"
    expected = request_blocks()
    for name, value in expected.items():
        assert blocks.get(name) == value, f"docs/integrating.md block {name!r} differs:\n{value}"
    assert expected["signature-base"].endswith(
        f';created={int(CREATED.timestamp())};keyid="{expected["keyid"]}";alg="ed25519";'
        f'expires={int(CREATED.timestamp()) + 120};nonce="{NONCE}"')


def test_the_guide_s_openssl_recipe_gives_the_keyid() -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    blocks = guide_blocks()
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks["keyid-shell"]], capture_output=True, text=True,
                         cwd=ROOT, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == blocks["keyid"]


def test_gateway_clients_add_prints_the_keyid_the_guide_computes(tmp_path: Path) -> None:
    import subprocess

    env = {"GATEWAY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "gateway", "clients", "add", "probation-is", "--role", "system",
                          "--public-key", str(PUBLIC_FILE)], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    keyid = guide_blocks()["keyid"]
    assert json.loads(run.stdout.splitlines()[0])["keyid"] == keyid
    assert f"keyid (RFC 7638 thumbprint; sign with keyid=\"…\" as this): {keyid}" in run.stderr
    assert "ed25519" in run.stderr
    # a key the verifier could never use is refused when it is added, not at the first request
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "p384.pem").write_bytes(p384)
    run = subprocess.run([sys.executable, "-m", "gateway", "clients", "add", "other", "--role", "system",
                          "--public-key", str(tmp_path / "p384.pem")], capture_output=True, text=True, env=env,
                         timeout=120, cwd=tmp_path)
    assert run.returncode == 2 and "cannot add other" in run.stderr, run.stderr


async def _register(database_url: str) -> None:
    engines = create_engines(database_url)
    store = Store(engines)
    try:
        await migrate(engines)
        await add_client(clients=ClientStore(store), client_id="probation-is", roles=["system"], now=CREATED,
                         public_key=PUBLIC_FILE.read_bytes())
    finally:
        await store.committer.stop()
        await engines.dispose()


def answer_block(tmp_path: Path, request: str | None = None) -> tuple[str, httpx.Response]:
    """The example request, as the guide shows it, sent to a gateway whose clock reads RECEIVED."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    asyncio.run(_register(database_url))
    settings = Settings(database_url=database_url, counterparts_file=default_counterparts(tmp_path), home=tmp_path,
                        public_url=PUBLIC_URL)
    server = ThreadServer(create_app(container=build(settings, clock=lambda: RECEIVED), run_worker=False)).start()
    try:
        head, _, body = (request or guide_blocks()["request"]).partition("\n\n")
        headers = dict(line.split(": ", 1) for line in head.splitlines()[1:] if not line.startswith("Host:"))
        r = httpx.post(server.url + "/v1/messages", content=body.encode("utf-8"), headers=headers)
    finally:
        server.stop()
    text = "\n".join([f"HTTP/1.1 {r.status_code} {r.reason_phrase}", f"content-type: {r.headers['content-type']}",
                      f"location: {r.headers.get('location')}", "", r.text])
    return text, r


def test_the_gateway_answers_the_example_as_the_guide_says(tmp_path: Path) -> None:
    text, r = answer_block(tmp_path)
    assert r.status_code == 202, r.text
    assert guide_blocks()["response"] == text, f"docs/integrating.md block 'response' differs:\n{text}"


def test_the_example_is_refused_once_it_expires(tmp_path: Path) -> None:
    """At `expires` (created + 120 s) the same bytes are refused `expired` (the 300 s maximum age, for a longer
    lifetime, is tests/security/test_httpsig.py's)."""
    global RECEIVED
    saved, RECEIVED = RECEIVED, CREATED + timedelta(seconds=120)
    try:
        _, r = answer_block(tmp_path)
    finally:
        RECEIVED = saved
    assert r.status_code == 401 and r.json()["type"] == "urn:probation-gateway:problem:expired", r.text


if __name__ == "__main__":
    import tempfile

    for name, value in request_blocks().items():
        print(f"<!-- worked-example:{name} -->\n```\n{value}\n```\n")
    with tempfile.TemporaryDirectory() as tmp:
        answer = answer_block(Path(tmp), request_blocks()["request"])[0]
        print(f"<!-- worked-example:response -->\n```http\n{answer}\n```")


def test_every_problem_type_of_the_code_is_in_the_guide() -> None:
    """A new problem type (a `slug`, a signature `reason`, a literal in a `problem(...)` call) needs its row."""
    found: set[str] = set()
    patterns = (r'(?m)^    slug = "([a-z-]+)"', r'(?m)^    reason = "([a-z-]+)"', r'problem\(\d{3}, "([a-z-]+)"',
                r'Unauthenticated\("([a-z-]+)"', r'\d{3}: "([a-z-]+)"', r'"(internal-error)"',
                r'ProblemType\("([a-z-]+)", \d{3}', r'problem_of\("([a-z-]+)"',
                r'(?m)^\s+\("([a-z-]+)", "[^"]*"\),?\)*,?$')
    for path in [*(ROOT / "gateway").rglob("*.py"), ROOT / "security" / "httpsig.py"]:
        if "console" in path.parts:  # people get pages there, not problem documents
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            found.update(re.findall(pattern, text))
    assert {"replayed-nonce", "reply-contradicts-referral", "store-unavailable", "idempotency-key-in-flight",
            "not-found", "malformed-json"} <= found  # the patterns still see the code
    found -= {"gateway-error", "http-error", "invalid-signature"}  # base classes, never sent as such
    rows = set()
    for line in GUIDE.read_text(encoding="utf-8").split("## Problem types", 1)[1].splitlines():
        if line.startswith("| `"):
            rows.update(re.findall(r"`([a-z-]+)`", line.split("|")[1]))
    assert sorted(found - rows) == [], "problem types missing from docs/integrating.md"
