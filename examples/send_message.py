"""Reference client: send one canonical message to the gateway, signed with RFC 9421 (httpx and http-message-signatures only)."""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import http_message_signatures as hms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# The gateway's profile (README, "HTTP API"): these components, and created, expires, nonce and keyid.
COVERED = ("@method", "@target-uri", "content-digest", "content-type")
LIFETIME = timedelta(seconds=120)


class _Message:
    """What the signer reads and writes: method, URL and a mutable header mapping."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


def _algorithm(key: object) -> type[hms.algorithms.HTTPSignatureAlgorithm]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return hms.algorithms.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return hms.algorithms.ECDSA_P256_SHA256
    if isinstance(key, rsa.RSAPrivateKey):
        return hms.algorithms.RSA_PSS_SHA512
    raise SystemExit(f"unsupported key type {type(key).__name__}")


def sample_message() -> dict[str, object]:
    """A case registration with a new message id and case number each time (the IIN is a valid test one)."""
    now = datetime.now(timezone(timedelta(hours=5)))
    return {
        "message_id": str(uuid.uuid4()),
        "type": "case.registered",
        "case_id": f"75-{now.year}-{random.randrange(10**6):06d}-1",
        "occurred_at": now.isoformat(),
        "body": {
            "region": "KZ-75",
            "person": {"iin": "970921436580", "surname": "Үсенова", "given_name": "Қарлығаш",
                       "birth_date": "1997-09-21", "sex": "female"},
            "release_date": (now.date() - timedelta(days=14)).isoformat(),
            "has_minor_children": False,
        },
    }


def signed_post(url: str, body: bytes, *, key: object, keyid: str) -> httpx.Request:
    """A POST of `body` to `url` carrying Content-Digest, Signature-Input and Signature."""
    message = _Message("POST", url, {"Content-Type": "application/json"})
    signer = hms.HTTPMessageSigner(signature_algorithm=_algorithm(key),
                                   key_resolver=hms.MappingKeyResolver(public_keys={}, private_keys={keyid: key}))
    created = datetime.now(timezone.utc)
    signer.sign(message, key_id=keyid, created=created, expires=created + LIFETIME, nonce=secrets.token_urlsafe(16),
                label="sig1", covered_component_ids=COVERED, body=body)
    return httpx.Request("POST", url, content=body, headers=message.headers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's public URL")
    parser.add_argument("--key", type=Path, required=True, help="the client's private key (PEM, unencrypted)")
    parser.add_argument("--keyid", required=True, help="the key's RFC 7638 thumbprint, as the gateway knows it")
    parser.add_argument("--message", type=Path, help="a canonical message (JSON); default: a new case registration")
    args = parser.parse_args(argv)

    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    doc = json.loads(args.message.read_text(encoding="utf-8")) if args.message else sample_message()
    body = json.dumps(doc, ensure_ascii=False).encode()
    request = signed_post(args.url.rstrip("/") + "/v1/messages", body, key=key, keyid=args.keyid)
    with httpx.Client(timeout=30) as client:
        response = client.send(request)
    print(f"{response.status_code} {response.text}")
    return 0 if response.status_code in (200, 202) else 1


if __name__ == "__main__":
    sys.exit(main())
