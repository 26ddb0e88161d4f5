"""What the gateway sends is signed once, in the pipeline, and verifies with independent implementations
against the keys it publishes at GET /v1/keys: RFC 9421 (http-message-signatures) and XML-DSig (python-xmlsec)."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import http_message_signatures as hms
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.samples import SampleCases
from security.keys import KeyStore
from tests.harness import Stack, wait_for
from tests.security.test_xmlsig import xmlsec_verify

PASSPHRASE = "test-only passphrase"


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[Stack]:
    keys = KeyStore(tmp_path / "keys", passphrase=PASSPHRASE)
    keys.generate(channel="json")
    keys.generate(channel="xml")
    s = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", national=("con",))
    try:
        s.start_gateway(keys_dir=tmp_path / "keys", key_passphrase=PASSPHRASE)
        yield s
    finally:
        s.close()


def _b64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def test_outbound_requests_are_signed_and_verify_independently(signed: Stack) -> None:
    samples = SampleCases(seed=61)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    shelter = samples.shelter_referral(case["case_id"])
    documents = samples.shelter_referral(case["case_id"])
    documents["body"]["kind"] = "document.restore"
    for message in (case, shelter, documents):
        assert signed.client.post(f"/v1/messages", json=message).status_code == 202
    wait_for(lambda: httpx.get(f"{signed.mio.url}/_sim/raw").json() and httpx.get(f"{signed.sims['con'].url}/_sim/raw").json(),
             what="both counterparts reached")

    jwks = signed.client.get(f"/v1/keys").json()["keys"]
    okp = next(k for k in jwks if k["kty"] == "OKP")
    xml_key = next(k for k in jwks if "x5c" in k)

    # RFC 9421 at МИО, checked by the http-message-signatures package with the published key
    raw = httpx.get(f"{signed.mio.url}/_sim/raw").json()[0]  # a retried attempt would add more, all signed
    headers = {k: v for k, v in raw["headers"]}
    body = base64.b64decode(raw["body"])

    class Req:
        method = raw["method"]
        url = signed.mio.url + raw["path"]

    Req.headers = headers  # type: ignore[attr-defined]
    public = Ed25519PublicKey.from_public_bytes(_b64(okp["x"]))
    verifier = hms.HTTPMessageVerifier(signature_algorithm=hms.algorithms.ED25519,
                                       key_resolver=hms.MappingKeyResolver(public_keys={okp["kid"]: public},
                                                                           private_keys={}))
    (result,) = verifier.verify(Req, max_age=timedelta(minutes=5), body=body,
                                require_components=("@method", "@target-uri", "content-digest", "content-type"))
    assert result.parameters["keyid"] == okp["kid"] and result.nonce
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(Req, body=body.replace(b"SHELTER", b"SHELTEX"))

    # XML signature at ЦОН, checked by python-xmlsec with the certificate the JWKS carries
    soap = httpx.get(f"{signed.sims['con'].url}/_sim/raw").json()[0]
    envelope = base64.b64decode(soap["body"])
    certificate = x509.load_der_x509_certificate(base64.b64decode(xml_key["x5c"][0]))
    xmlsec_verify(envelope, certificate)
    assert b"<ds:Signature" in envelope or b"Signature" in envelope

    # the counterparts still processed the signed messages, once each
    wait_for(lambda: len([m for m in httpx.get(f"{signed.probation.url}/_sim/received").json()
                          if m["type"] == "referral.completed"]) == 2, what="both referrals completed")


def test_keys_cli_generate_rotate_revoke_and_jwks(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from gateway.config import ROOT

    env = dict(os.environ, GATEWAY_KEYS_DIR=str(tmp_path / "keys"), GATEWAY_KEY_PASSPHRASE=PASSPHRASE)

    def gw(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway", "keys", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    first = gw("generate")
    assert first.returncode == 0, first.stderr
    old_kid = first.stdout.split()[0]
    again = gw("generate")
    assert again.returncode == 2, (again.stdout, again.stderr)  # a channel has one active key: rotate instead
    rotated = gw("rotate", "--overlap-hours", "1")
    assert rotated.returncode == 0, rotated.stderr
    listed = gw("list").stdout
    assert f"{old_kid}  json  ed25519     retired" in listed and listed.count("active") == 1, listed
    store = KeyStore(tmp_path / "keys", passphrase=PASSPHRASE)
    assert {k["kid"] for k in store.jwks()["keys"]} >= {old_kid}  # still verifies during the overlap
    revoked = gw("revoke", "--", old_kid)  # a kid is base64url and may start with "-"
    assert revoked.returncode == 0, revoked.stderr
    store.refresh()
    assert old_kid not in {k["kid"] for k in store.jwks()["keys"]}
    key_files = list((tmp_path / "keys").glob("*.key.pem"))
    assert len(key_files) == 2 and all(b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in p.read_bytes() for p in key_files)
    no_pass = subprocess.run([sys.executable, "-m", "gateway", "keys", "list"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, env={k: v for k, v in env.items() if k != "GATEWAY_KEY_PASSPHRASE"})
    assert no_pass.returncode == 2 and "GATEWAY_KEY_PASSPHRASE" in no_pass.stderr
