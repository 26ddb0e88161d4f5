"""Send one canonical message to the gateway, signed with RFC 9421 by the reference client's code
(examples/reference_client.py: httpx and http-message-signatures only)."""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_client import keyid_of, sign  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's public URL")
    parser.add_argument("--key", type=Path, required=True, help="the client's private key (PEM, unencrypted)")
    parser.add_argument("--keyid", help="the key's RFC 7638 thumbprint (default: computed from the key)")
    parser.add_argument("--message", type=Path, help="a canonical message (JSON); default: a new case registration")
    args = parser.parse_args(argv)

    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    doc = json.loads(args.message.read_text(encoding="utf-8")) if args.message else sample_message()
    body = json.dumps(doc, ensure_ascii=False).encode()
    url = args.url.rstrip("/") + "/v1/messages"
    headers = sign("POST", url, body, key=key, keyid=args.keyid or keyid_of(key.public_key()))
    with httpx.Client(timeout=30) as client:
        response = client.post(url, content=body, headers=headers)
    print(f"{response.status_code} {response.text}")
    return 0 if response.status_code in (200, 202) else 1


if __name__ == "__main__":
    sys.exit(main())
