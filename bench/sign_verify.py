"""Cost of RFC 9421 signing + verification per message, against serialising and hashing the same body."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.pipeline.ports import WireRequest
from security.httpsig import HttpSigner, HttpVerifier, MemoryNonceStore, _sign_bytes, _verify_bytes

URI = "https://mio-almaty.example.kz:8443/api/v2/referrals"
# bench/RESULTS.md: 531-588 referrals/s delivered end to end on this machine, one core for the gateway.
FOUNDATION_DELIVERED_PER_S = 560.0

REFERRAL = {
    "message_id": "0b8f3c2e-5d1a-4c3b-9e2f-7a6d5c4b3a21",
    "type": "referral.requested",
    "occurred_at": "2026-11-28T08:55:00+05:00",
    "correlation_id": "6a1e9f0b-4c2d-4b8e-8f3a-2d1c0b9a8e7f",
    "case": {"case_id": "PRB-2026-000123", "region": "KZ-ALA", "officer": "Сейтказиева А."},
    "person": {"iin": "900101300123", "last_name": "Ахметов", "first_name": "Ерлан", "birth_date": "1990-01-01"},
    "referral": {"kind": "housing.social", "domain": "housing", "risk_id": "R-77", "priority": "high",
                 "due": "2026-12-05", "note": "Освобождён 2026-11-20, нуждается во временном жилье"},
}


def _keys() -> dict[str, object]:
    return {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ecdsa-p256-sha256": ec.generate_private_key(ec.SECP256R1()),
        "rsa-pss-sha512": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def _baseline(n: int) -> float:
    """Seconds per message to serialise the referral and sha-256 it: the floor any signed body pays."""
    start = time.perf_counter()
    for _ in range(n):
        hashlib.sha256(orjson.dumps(REFERRAL)).digest()
    return (time.perf_counter() - start) / n


async def _measure(alg: str, key: object, n: int) -> dict[str, float]:
    body = orjson.dumps(REFERRAL)
    request = WireRequest("POST", "/api/v2/referrals", (("Content-Type", "application/json"),), body)
    signer = HttpSigner(keyid="gw", private_key=key)  # type: ignore[arg-type]
    verifier = HttpVerifier(resolve_key={"gw": key.public_key()}.get, nonces=MemoryNonceStore())  # type: ignore[attr-defined]
    for _ in range(min(200, n)):  # warm caches and allocator before timing
        await verifier.verify_request(signer.sign_request(request, target_uri=URI), target_uri=URI)

    # The floor: the same algorithm on a signature base of the same size, with no HTTP work around it.
    base = b"x" * 300
    raw_signer = HttpSigner(keyid="gw", private_key=key)  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(n):
        _verify_bytes(raw_signer.alg, key.public_key(), _sign_bytes(raw_signer.alg, key, base), base)  # type: ignore[arg-type,attr-defined]
    crypto_s = (time.perf_counter() - start) / n

    start = time.perf_counter()
    signed = [signer.sign_request(request, target_uri=URI) for _ in range(n)]
    sign_s = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for message in signed:
        await verifier.verify_request(message, target_uri=URI)
    verify_s = (time.perf_counter() - start) / n
    return {"crypto_us": crypto_s * 1e6, "sign_us": sign_s * 1e6, "verify_us": verify_s * 1e6, "both_us": (sign_s + verify_s) * 1e6,
            "ops_per_s": 1 / (sign_s + verify_s)}


def _package_pair_us(key: object, n: int) -> float:
    """The same Ed25519 sign + verify through the http-message-signatures package (a test dependency)."""
    from dataclasses import dataclass
    from datetime import datetime, timedelta, timezone

    import http_message_signatures as hms

    @dataclass
    class Request:
        method: str
        url: str
        headers: dict[str, str]

    resolver = hms.MappingKeyResolver(public_keys={"gw": key.public_key()}, private_keys={"gw": key})  # type: ignore[attr-defined]
    signer = hms.HTTPMessageSigner(signature_algorithm=hms.algorithms.ED25519, key_resolver=resolver)
    verifier = hms.HTTPMessageVerifier(signature_algorithm=hms.algorithms.ED25519, key_resolver=resolver)
    body = orjson.dumps(REFERRAL)
    start = time.perf_counter()
    for i in range(n):
        now = datetime.now(timezone.utc)
        message = Request("POST", URI, {"Content-Type": "application/json"})
        signer.sign(message, key_id="gw", created=now, expires=now + timedelta(seconds=300), nonce=f"n{i}",
                    covered_component_ids=("@method", "@target-uri", "content-digest", "content-type"), body=body)
        verifier.verify(message, body=body, max_age=timedelta(seconds=300))
    return (time.perf_counter() - start) / n * 1e6


def run(args: argparse.Namespace) -> dict[str, object]:
    body_len = len(orjson.dumps(REFERRAL))
    baseline_us = _baseline(args.messages * 10) * 1e6
    budget_us = 1e6 / FOUNDATION_DELIVERED_PER_S
    results: dict[str, object] = {"body_bytes": body_len, "baseline_us": baseline_us, "messages": args.messages}
    print(f"body {body_len} bytes; baseline orjson.dumps + sha-256: {baseline_us:.2f} µs/msg "
          f"({1e6 / baseline_us:,.0f}/s)")
    print(f"foundation budget: {budget_us:.0f} µs per delivered referral ({FOUNDATION_DELIVERED_PER_S:.0f}/s)")
    # Throughput lost when X µs are added to each referral's 1786 µs: X / (1786 + X). A delivered referral
    # costs one pair (our signed request, the counterpart's signed response) or two when its callback
    # is verified and our answer to it signed too.
    print(f"{'alg':<20}{'crypto µs':>10}{'sign µs':>10}{'verify µs':>11}{'pair µs':>10}{'pairs/s':>10}{'× baseline':>12}"
          f"{'loss, 1 pair':>14}{'loss, 2 pairs':>15}")
    keys = _keys()
    for alg in args.algs:
        r = asyncio.run(_measure(alg, keys[alg], args.messages))
        loss1 = r["both_us"] / (budget_us + r["both_us"]) * 100
        loss2 = 2 * r["both_us"] / (budget_us + 2 * r["both_us"]) * 100
        results[alg] = {**r, "throughput_loss_pct_1_pair": loss1, "throughput_loss_pct_2_pairs": loss2}
        print(f"{alg:<20}{r['crypto_us']:>10.1f}{r['sign_us']:>10.1f}{r['verify_us']:>11.1f}{r['both_us']:>10.1f}"
              f"{r['ops_per_s']:>10,.0f}{r['both_us'] / baseline_us:>12.0f}{loss1:>13.1f}%{loss2:>14.1f}%")
    if args.with_package:
        package_us = _package_pair_us(keys["ed25519"], args.messages)
        results["package_ed25519_pair_us"] = package_us
        print(f"http-message-signatures package, ed25519 sign + verify: {package_us:.1f} µs per pair")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--algs", nargs="+", default=["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"])
    parser.add_argument("--with-package", action="store_true",
                        help="also time the http-message-signatures package on the same message (test extra)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()
    results = run(args)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
