"""Reference client for the Probation IS, written from docs/integrating.md with only httpx and the
`http-message-signatures` package (and `cryptography`, which that package uses for keys): none of the gateway's code.

Run it against a gateway: it registers a case, reports a housing risk (the routing matrix makes a shelter
referral to МИО), asks for a record (employment status at МТСЗН), then follows the risk to its referral and the
referral to its completion through the status URLs the gateway returned, and the record request to its result.

    python examples/reference_client.py --url https://gateway.example.kz --key probation-is.key.pem

The pieces are meant to be copied: `keyid_of` (RFC 7638 thumbprint), `sign` (RFC 9421 request signature as the
gateway's profile wants it), `Gateway` (submits with an Idempotency-Key and resends safely, follows status URLs),
`verify_from_gateway` and `sign_acknowledgement` (the receiving side: what the gateway pushes to the Probation IS).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import http_message_signatures as hms
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# ---- the signing profile (docs/integrating.md, "Signing") ------------------------------------------------------

LABEL = "sig1"  # the one signature label; the gateway accepts exactly one signature per request
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-digest", "content-type")
BODILESS_COMPONENTS = ("@method", "@target-uri", "content-digest")  # a GET has no content type to cover
ACK_COMPONENTS = ("@status", "content-digest", "content-type", '"@method";req', '"@target-uri";req')
LIFETIME = timedelta(seconds=120)  # expires - created; the gateway also refuses anything created > 300 s ago
MAX_AGE = timedelta(seconds=300)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def public_jwk(public_key: Any) -> dict[str, str]:
    """The required members of the key's JWK (RFC 7517/7518; RFC 8037 for Ed25519), as the thumbprint needs them."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        n = public_key.public_numbers()
        return {"crv": "P-256", "kty": "EC", "x": _b64url(n.x.to_bytes(32, "big")), "y": _b64url(n.y.to_bytes(32, "big"))}
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048:
        n = public_key.public_numbers()
        return {"e": _b64url(_int_bytes(n.e)), "kty": "RSA", "n": _b64url(_int_bytes(n.n))}
    raise ValueError("the gateway takes Ed25519, ECDSA P-256 or RSA (2048 bits or more) keys")


def keyid_of(public_key: Any) -> str:
    """RFC 7638: SHA-256 of the JWK's required members, sorted, without whitespace; base64url without padding."""
    canonical = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":")).encode("ascii")
    return _b64url(hashlib.sha256(canonical).digest())


def _algorithm(key: Any) -> type[hms.algorithms.HTTPSignatureAlgorithm]:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return hms.algorithms.ED25519
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return hms.algorithms.ECDSA_P256_SHA256
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return hms.algorithms.RSA_PSS_SHA512
    raise ValueError(f"unsupported key type {type(key).__name__}")


class _Request:
    """What the package reads and writes: method, URL and a mutable header mapping."""

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method, self.url, self.headers = method, url, headers


class _Response:
    def __init__(self, status_code: int, headers: dict[str, str], request: _Request | None = None) -> None:
        self.status_code, self.headers, self.request = status_code, headers, request


def _signer(key: Any, keyid: str) -> hms.HTTPMessageSigner:
    return hms.HTTPMessageSigner(signature_algorithm=_algorithm(key),
                                 key_resolver=hms.MappingKeyResolver(public_keys={}, private_keys={keyid: key}))


def sign(method: str, url: str, body: bytes, *, key: Any, keyid: str, content_type: str | None = "application/json",
         created: datetime | None = None, nonce: str | None = None) -> dict[str, str]:
    """The request's headers: Content-Type (when there is a body), Content-Digest, Signature-Input, Signature.

    `url` is the absolute URL as the gateway's public address names it (GATEWAY_PUBLIC_URL + path + query):
    that is what `@target-uri` covers, not what a proxy on the way sees. Every try is a new signature (a nonce
    is good for one request)."""
    headers = {"Content-Type": content_type} if content_type else {}
    created = created or datetime.now(timezone.utc)
    _signer(key, keyid).sign(_Request(method, url, headers), key_id=keyid, created=created,
                             expires=created + LIFETIME, nonce=nonce or secrets.token_urlsafe(16), label=LABEL,
                             covered_component_ids=REQUEST_COMPONENTS if content_type else BODILESS_COMPONENTS,
                             body=body)
    return headers


def signature_base(method: str, url: str, body: bytes, *, key: Any, keyid: str, created: datetime,
                   nonce: str, content_type: str = "application/json") -> bytes:
    """The bytes `sign` signs, for checking an implementation of one's own against (the guide's worked example)."""
    prepared = _signer(key, keyid).prepare(
        _Request(method, url, {"Content-Type": content_type}), key_id=keyid, created=created,
        expires=created + LIFETIME, nonce=nonce, label=LABEL, covered_component_ids=REQUEST_COMPONENTS, body=body)
    return prepared.signature_base


# ---- the receiving side: what the gateway pushes to the Probation IS ---------------------------------------------


def _public_from_jwk(jwk: Mapping[str, Any]) -> Any:
    def b64(name: str) -> bytes:
        value = str(jwk[name])
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))

    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(b64("x"))
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return ec.EllipticCurvePublicNumbers(int.from_bytes(b64("x"), "big"), int.from_bytes(b64("y"), "big"),
                                             ec.SECP256R1()).public_key()
    if jwk.get("kty") == "RSA":
        return rsa.RSAPublicNumbers(int.from_bytes(b64("e"), "big"), int.from_bytes(b64("n"), "big")).public_key()
    raise ValueError(f"unsupported JWK {jwk.get('kty')}/{jwk.get('crv')}")


def _keyid_in(signature_input: str) -> str:
    marker = 'keyid="'
    start = signature_input.index(marker) + len(marker)
    return signature_input[start:signature_input.index('"', start)]


class NonceCache:
    """Replay protection on the receiving side: a (keyid, nonce) pair is good once while its signature is."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}

    def first_use(self, keyid: str, nonce: str) -> bool:
        now = time.time()
        self._seen = {k: v for k, v in self._seen.items() if v > now}
        if (keyid, nonce) in self._seen:
            return False
        self._seen[(keyid, nonce)] = now + MAX_AGE.total_seconds() + 60
        return True


def verify_from_gateway(method: str, url: str, headers: Mapping[str, str], body: bytes,
                        jwks: Mapping[str, Any], *, nonces: NonceCache | None = None) -> str:
    """Verify a request the gateway sent (its push of a message to the Probation IS): the signature with the key
    `GET /v1/keys` publishes under the request's keyid, the covered components, the age, the Content-Digest and,
    with `nonces`, that it is not a replay. Returns the keyid; raises ValueError otherwise. `url` is the absolute
    URL the gateway sent to (the receiver's address as configured at the gateway)."""
    fields = {k.lower(): v for k, v in headers.items()}
    kid = _keyid_in(fields.get("signature-input", ""))
    jwk = next((k for k in jwks.get("keys", []) if k.get("kid") == kid), None)
    if jwk is None:
        raise ValueError(f"keyid {kid!r} is not one of the gateway's published keys")
    public = _public_from_jwk(jwk)
    verifier = hms.HTTPMessageVerifier(signature_algorithm=_algorithm(public),
                                       key_resolver=hms.MappingKeyResolver(public_keys={kid: public}, private_keys={}))
    try:
        (result,) = verifier.verify(_Request(method, url, dict(headers)), max_age=MAX_AGE, body=body,
                                    require_components=REQUEST_COMPONENTS)
    except (hms.InvalidSignature, hms.HTTPMessageSignaturesException) as exc:
        raise ValueError(f"the gateway's signature does not verify: {exc}") from exc
    if nonces is not None and not nonces.first_use(kid, str(result.nonce)):
        raise ValueError("replayed nonce")
    return kid


def sign_acknowledgement(status: int, body: bytes, *, request_method: str, request_url: str, key: Any, keyid: str,
                         content_type: str = "application/json") -> dict[str, str]:
    """Headers for the receiver's answer to a push: signed with the Probation IS key the gateway pins, over the
    status, the digest and type of the answer, and bound to the request it answers (`"@method";req`,
    `"@target-uri";req`). The gateway refuses an answer that does not verify (the delivery dead-letters)."""
    headers = {"Content-Type": content_type}
    created = datetime.now(timezone.utc)
    _signer(key, keyid).sign(_Response(status, headers, _Request(request_method, request_url, {})), key_id=keyid,
                             created=created, expires=created + LIFETIME, nonce=secrets.token_urlsafe(16),
                             label=LABEL, covered_component_ids=ACK_COMPONENTS, body=body)
    return headers


# ---- calling the gateway ----------------------------------------------------------------------------------------


class Problem(Exception):
    """An application/problem+json answer: `type` says what to do (docs/integrating.md, "Problems")."""

    def __init__(self, status: int, doc: dict[str, Any]) -> None:
        super().__init__(f"{status} {doc.get('type')}: {doc.get('detail')}")
        self.status, self.doc = status, doc

    @property
    def slug(self) -> str:
        return str(self.doc.get("type", "")).rsplit(":", 1)[-1]


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool  # Idempotent-Replayed: true, the first answer to this Idempotency-Key again


class Gateway:
    """Signs every call, submits with an Idempotency-Key and resends only what is safe to resend."""

    RESEND_STATUSES = (503,)  # store-unavailable: nothing was written; and 409 idempotency-key-in-flight below

    def __init__(self, url: str, *, key: Any, keyid: str, http: httpx.Client | None = None, attempts: int = 8,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.url = url.rstrip("/")
        self.key, self.keyid = key, keyid
        self.http = http or httpx.Client(timeout=30)
        self.attempts = attempts
        self.log = log

    def _send(self, method: str, url: str, body: bytes, extra: dict[str, str]) -> httpx.Response:
        headers = sign(method, url, body, key=self.key, keyid=self.keyid,
                       content_type="application/json" if method == "POST" else None)
        return self.http.request(method, url, content=body, headers={**headers, **extra})

    def post(self, path: str, doc: dict[str, Any], *, idempotency_key: str | None = None) -> Answer:
        """POST `doc`; on 503, 409 idempotency-key-in-flight or a lost connection, the same bytes again under the
        same Idempotency-Key (each time signed afresh) after Retry-After. Other problems are raised at once."""
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        key = idempotency_key or str(uuid.uuid4())
        url = self.url + path
        for attempt in range(1, self.attempts + 1):
            try:
                r = self._send("POST", url, body, {"Idempotency-Key": key})
            except httpx.TransportError as exc:  # the request may or may not have arrived: resending is safe
                self.log(f"POST {path}: {type(exc).__name__}, resending (attempt {attempt})")
                time.sleep(min(8.0, 0.25 * 2 ** attempt))
                continue
            if r.status_code < 300:
                return Answer(r.status_code, r.json(), r.headers.get("idempotent-replayed") == "true")
            doc_out = _problem(r)
            in_flight = r.status_code == 409 and doc_out.get("type", "").endswith(":idempotency-key-in-flight")
            if r.status_code not in self.RESEND_STATUSES and not in_flight:
                raise Problem(r.status_code, doc_out)
            wait = float(r.headers.get("retry-after", "1"))
            self.log(f"POST {path}: {r.status_code} {doc_out.get('type')}, resending in {wait:g} s")
            time.sleep(wait)
        raise RuntimeError(f"POST {path}: no answer after {self.attempts} attempts")

    def get(self, url: str) -> dict[str, Any]:
        """GET a status URL (absolute, as the gateway returned it), signed like any call."""
        for attempt in range(1, self.attempts + 1):
            r = self._send("GET", url, b"", {})
            if r.status_code == 200:
                return r.json()
            if r.status_code != 503:
                raise Problem(r.status_code, _problem(r))
            time.sleep(float(r.headers.get("retry-after", "1")))
        raise RuntimeError(f"GET {url}: no answer after {self.attempts} attempts")

    def follow(self, url: str, done: Callable[[dict[str, Any]], bool], *, timeout: float = 60.0,
               interval: float = 0.5) -> dict[str, Any]:
        """Poll a status URL until `done(status)`; the gateway also pushes every reply, so polling is optional."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get(url)
            if done(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not reach the expected state in {timeout:g} s: {status}")
            time.sleep(interval)


def _problem(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except ValueError:
        doc = {}
    return doc if isinstance(doc, dict) else {}


# ---- the scenario --------------------------------------------------------------------------------------------


def _iin(rng: random.Random, birth: date) -> str:
    """A valid test IIN (female, born in the 1900s): the check digit of the Kazakh IIN algorithm."""
    weights = (list(range(1, 12)), [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2])
    while True:
        digits = [int(c) for c in f"{birth:%y%m%d}4{rng.randrange(10000):04d}"]
        check = sum(d * w for d, w in zip(digits, weights[0])) % 11
        if check == 10:
            check = sum(d * w for d, w in zip(digits, weights[1])) % 11
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def scenario(region: str, rng: random.Random) -> dict[str, dict[str, Any]]:
    now = datetime.now(timezone(timedelta(hours=5)))
    case_id = f"{region[3:]}-{now.year}-{rng.randrange(10**6):06d}-1"
    birth = date(1990, 5, 17)
    iin = _iin(rng, birth)
    case = {"message_id": str(uuid.uuid4()), "type": "case.registered", "case_id": case_id,
            "occurred_at": now.isoformat(),
            "body": {"region": region, "person": {"iin": iin, "surname": "Үсенова", "given_name": "Қарлығаш",
                                                  "birth_date": birth.isoformat(), "sex": "female"},
                     "release_date": (now.date() - timedelta(days=3)).isoformat(), "has_minor_children": False}}
    risk = {"message_id": str(uuid.uuid4()), "type": "risk.detected", "case_id": case_id,
            "occurred_at": now.isoformat(),
            "body": {"risk_id": f"R-{rng.randrange(10**6)}", "domain": "housing", "level": "R3", "trigger": "homeless"}}
    document = {"case_id": case_id, "record_kind": "employment_status", "iin": iin,
                "purpose": "individual plan: employment track"}
    return {"case": case, "risk": risk, "document": document}


def run(gateway: Gateway, *, region: str = "KZ-35", seed: int | None = None, timeout: float = 60.0,
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """The integrator's first day, end to end; returns what it saw (ids, status URLs, the final states)."""
    msgs = scenario(region, random.Random(seed))
    case = gateway.post("/v1/messages", msgs["case"])
    say(f"case.registered   {case.status} {case.body['status_url']}")
    risk = gateway.post("/v1/messages", msgs["risk"], idempotency_key=f"risk-{msgs['risk']['message_id']}")
    say(f"risk.detected     {risk.status} {risk.body['status_url']}")
    again = gateway.post("/v1/messages", msgs["risk"], idempotency_key=f"risk-{msgs['risk']['message_id']}")
    say(f"  sent again      {again.status} Idempotent-Replayed: {str(again.replayed).lower()}")
    document = gateway.post("/v1/document-requests", msgs["document"])
    say(f"document request  {document.status} {document.body['status_url']}")

    # The risk's status names the referrals the routing matrix made for it; each has a status URL of its own.
    risk_status = gateway.follow(risk.body["status_url"], lambda s: bool(s["caused"]), timeout=timeout)
    referral_link = risk_status["caused"][0]
    say(f"  caused          {referral_link['type']} {referral_link['referral_id']} {referral_link['status_url']}")
    referral = gateway.follow(referral_link["status_url"],
                              lambda s: (s.get("referral") or {}).get("status") in ("completed", "rejected"),
                              timeout=timeout)
    for step in referral["referral"]["steps"]:
        say(f"    {step['step']:<10} {step['at']}  {step['peer']:<16} {step['status_url']}")
    final = next(s for s in reversed(referral["referral"]["steps"]) if s["step"] in ("completed", "rejected"))
    reply = gateway.get(final["status_url"])
    say(f"  {reply['type']} caused by {reply['caused_by']['type']} {reply['caused_by']['status_url']}")
    record = gateway.follow(document.body["status_url"], lambda s: s["state"] != "pending", timeout=timeout)
    say(f"document request  {record['state']} {record.get('status')} (served from {record.get('served_from')})")
    return {"case": case.body, "risk": risk.body, "risk_replayed": again.replayed, "risk_status": risk_status,
            "referral": referral, "reply": reply, "document": document.body, "record": record}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's public URL (GATEWAY_PUBLIC_URL)")
    parser.add_argument("--key", type=Path, required=True, help="the client's private key (PEM, unencrypted)")
    parser.add_argument("--keyid", help="default: the key's RFC 7638 thumbprint, as `gateway clients add` printed it")
    parser.add_argument("--region", default="KZ-35", help="the case's region (a МИО instance must serve it)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each state")
    parser.add_argument("--json", action="store_true", help="print what was seen as one JSON document at the end")
    args = parser.parse_args(argv)

    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    keyid = args.keyid or keyid_of(key.public_key())
    gateway = Gateway(args.url, key=key, keyid=keyid, log=lambda line: print(line, file=sys.stderr))
    try:
        seen = run(gateway, region=args.region, timeout=args.timeout)
    except Problem as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"gave up: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(seen, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
