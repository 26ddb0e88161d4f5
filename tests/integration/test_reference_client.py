"""The reference client (examples/reference_client.py: httpx and http-message-signatures only) against a live
gateway on loopback, with the simulators as counterparts: what docs/integrating.md tells an integrator works."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from gateway.config import ROOT
from security.keys import KeyStore
from tests.harness import Stack, wait_for

sys.path.insert(0, str(ROOT / "examples"))
import reference_client as rc  # noqa: E402

PASSPHRASE = "test-only passphrase"


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    keys = KeyStore(tmp_path / "keys", passphrase=PASSPHRASE)
    keys.generate(channel="json")  # so the gateway signs what it pushes to the Probation IS
    s = Stack(tmp_path, database_url, national=("mtszn",))
    try:
        s.start_gateway(keys_dir=tmp_path / "keys", key_passphrase=PASSPHRASE)
        yield s
    finally:
        s.close()


def test_the_reference_client_follows_a_risk_to_its_completion_and_a_record_request(stack: Stack) -> None:
    key_file = stack.keys_dir / "probation-is.key.pem"
    # No --keyid: the client computes the RFC 7638 thumbprint itself; it must be the one the gateway registered.
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "reference_client.py"), "--url", stack.gateway_url,
                          "--key", str(key_file), "--json", "--timeout", "60"],
                         capture_output=True, text=True, timeout=180, cwd=stack.tmp)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    seen = json.loads(lines[-1])
    printed = "\n".join(lines[:-1])
    assert "Idempotent-Replayed: true" in printed and seen["risk_replayed"] is True

    base = stack.gateway_url + "/v1/"
    assert seen["risk"]["status_url"].startswith(base + "messages/")
    assert seen["document"]["status_url"].startswith(base + "document-requests/")  # absolute, like a message's
    referral = seen["referral"]
    assert referral["caused_by"]["message_id"] == seen["risk"]["message_id"]
    steps = [s["step"] for s in referral["referral"]["steps"]]
    assert steps[0] == "requested" and "delivered" in steps and steps[-1] in ("completed", "accepted")
    assert {"accepted", "completed"} <= set(steps)
    assert referral["referral"]["status"] == "completed"
    assert seen["reply"]["type"] == "referral.completed"
    assert seen["record"]["state"] == "done" and seen["record"]["status"] in ("found", "not_found")

    # The receiving side: what the gateway pushed verifies against GET /v1/keys with the reference code.
    jwks = httpx.get(f"{stack.gateway_url}/v1/keys").json()
    wait_for(lambda: len(httpx.get(f"{stack.probation.url}/_sim/raw").json()) >= 3, what="pushes to the Probation IS")
    nonces = rc.NonceCache()
    pushes = httpx.get(f"{stack.probation.url}/_sim/raw").json()
    for raw in pushes:
        headers = {k: v for k, v in raw["headers"]}
        body = base64.b64decode(raw["body"])
        kid = rc.verify_from_gateway(raw["method"], stack.probation.url + raw["path"], headers, body, jwks,
                                     nonces=nonces)
        assert kid in {k["kid"] for k in jwks["keys"]}
    with pytest.raises(ValueError, match="replayed"):
        raw = pushes[0]
        rc.verify_from_gateway(raw["method"], stack.probation.url + raw["path"], {k: v for k, v in raw["headers"]},
                               base64.b64decode(raw["body"]), jwks, nonces=nonces)
    tampered = pushes[0]
    with pytest.raises(ValueError, match="does not verify"):
        rc.verify_from_gateway(tampered["method"], stack.probation.url + tampered["path"],
                               {k: v for k, v in tampered["headers"]}, base64.b64decode(tampered["body"]) + b" ", jwks)


async def test_the_reference_acknowledgement_verifies_as_the_gateway_checks_a_receiver_s_answer() -> None:
    """What `sign_acknowledgement` makes is what the delivery worker requires of the Probation IS's answer."""
    from cryptography.hazmat.primitives import serialization

    from gateway.pipeline.ports import WireRequest, WireResponse
    from security.httpsig import HttpVerifier, MemoryNonceStore, MissingComponent

    key = serialization.load_pem_private_key((ROOT / "examples" / "keys" / "example-client.key.pem").read_bytes(),
                                             password=None)
    keyid = rc.keyid_of(key.public_key())
    url = "https://probation-is.example.kz/api/v1/gateway-messages"
    body = b'{"received":"0c1f5b8e-3a0d-4e57-9a4b-6d2f1e7c9a10"}'
    headers = rc.sign_acknowledgement(200, body, request_method="POST", request_url=url, key=key, keyid=keyid)
    verifier = HttpVerifier(resolve_key=lambda kid: key.public_key() if kid == keyid else None,
                            nonces=MemoryNonceStore())
    request = WireRequest("POST", "/api/v1/gateway-messages", (("content-type", "application/json"),), b"{}")
    verified = await verifier.verify_response(WireResponse(200, tuple(headers.items()), body), request=request,
                                              target_uri=url)
    assert verified.keyid == keyid and '"@target-uri";req' in verified.covered
    # an answer not bound to its request is refused
    loose = rc.sign("POST", url, body, key=key, keyid=keyid)
    with pytest.raises(MissingComponent):
        await verifier.verify_response(WireResponse(200, tuple(loose.items()), body), request=request,
                                       target_uri=url)
