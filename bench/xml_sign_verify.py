"""XML signature cost per ЦОН SOAP envelope (sign, verify, both) against parse+serialise of the same envelope.

Usage: .venv/bin/python -m bench.xml_sign_verify [--n 500]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from adapters.con.codec import ConAdapter
from gateway.canonical.messages import parse_message
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.pipeline.ports import EncodeContext
from gateway.xmlsafe import parse_xml
from security.xmlsig import SignxmlSigner, verify_envelope

NOW = datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)


def _envelope() -> bytes:
    mappings = load_mappings(ROOT / "gateway" / "mappings")
    case = parse_message({
        "message_id": "9f8fad5b-d9cb-469f-a165-70867728950e", "type": "case.registered",
        "case_id": "KRG-2026-000123", "occurred_at": "2026-03-01T09:00:00+05:00",
        "body": {"region": "KZ-35", "person": {"iin": "061211600012", "surname": "Өтегенова", "given_name": "Әсел",
                                               "birth_date": "2006-12-11", "sex": "female"}},
    })
    referral = parse_message({
        "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
        "case_id": "KRG-2026-000123", "occurred_at": "2026-03-02T09:15:00+05:00",
        "body": {"referral_id": "REF-0", "kind": "document.restore", "details": {"note": "жоғалған құжат"}},
    })
    return ConAdapter().encode(referral, mappings=mappings, instance=mappings.instance("con"),
                               context=EncodeContext(now=NOW, case=case)).body


def _cert(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=30)).sign(key, hashes.SHA256()))


def _measure(fn: Callable[[], object], n: int) -> float:
    """Seconds per call, best of three runs of n (the minimum is the least disturbed by the machine)."""
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def _rows(envelope: bytes, signer: SignxmlSigner, signed: bytes,
          cert: x509.Certificate) -> tuple[tuple[str, Callable[[], object]], ...]:
    return (
        ("sign", lambda: signer.sign(envelope)),
        ("verify", lambda: verify_envelope(signed, trusted=[cert], now=NOW)),
        ("sign+verify", lambda: verify_envelope(signer.sign(envelope), trusted=[cert], now=NOW)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500, help="operations per timed run")
    args = parser.parse_args()
    envelope = _envelope()
    print(f"envelope: {len(envelope)} bytes; n={args.n}, best of 3")
    print(f"{'operation':<34}{'ops/s':>10}{'µs/op':>12}{'× baseline':>12}")
    base = _measure(lambda: etree.tostring(parse_xml(envelope)), args.n)
    print(f"{'baseline parse+serialise':<34}{1 / base:>10.0f}{base * 1e6:>12.1f}{1:>12.1f}")
    for label, key in (("rsa-2048 rsa-sha256", rsa.generate_private_key(65537, 2048)),
                       ("p-256 ecdsa-sha256", ec.generate_private_key(ec.SECP256R1()))):
        cert = _cert(key)
        signer = SignxmlSigner(key, cert, clock=lambda: NOW)
        signed = signer.sign(envelope)
        verify_envelope(signed, trusted=[cert], now=NOW)  # a failing setup must not be timed
        rows = _rows(envelope, signer, signed, cert)
        for op, fn in rows:
            t = _measure(fn, args.n)
            print(f"{label + ' ' + op:<34}{1 / t:>10.0f}{t * 1e6:>12.1f}{t / base:>12.1f}")


if __name__ == "__main__":
    main()
