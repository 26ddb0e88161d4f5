"""The gateway's key store: generation, encryption at rest, rotation overlap, revocation, JWKS."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from security.keys import KeyStore, KeyStoreError, jwk_thumbprint

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
PASS = "correct horse battery staple"


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _store(tmp_path: Path, **kw) -> KeyStore:
    return KeyStore(tmp_path / "keys", passphrase=kw.pop("passphrase", PASS), clock=lambda: T0, **kw)


def test_generate_round_trips_through_a_fresh_store(tmp_path: Path) -> None:
    info = _store(tmp_path).generate()
    assert info.algorithm == "ed25519" and info.channel == "json" and info.created == T0 and info.active

    again = _store(tmp_path)  # another process: only the files and the passphrase
    key = again.active()
    assert key.kid == info.kid == jwk_thumbprint(key.private_key.public_key())
    assert isinstance(key.private_key, ed25519.Ed25519PrivateKey)
    signature = key.private_key.sign(b"referral")
    again.verification_keys()[0].public_key.verify(signature, b"referral")  # raises if it is another key
    assert [i.kid for i in again.list()] == [info.kid]


def test_private_key_is_encrypted_at_rest_and_needs_the_passphrase(tmp_path: Path) -> None:
    store = _store(tmp_path)
    info = store.generate()
    raw = store.active().private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    files = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    pem = files[f"{info.kid}.key.pem"]
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    for content in files.values():
        assert raw not in content and base64.b64encode(raw) not in content
    assert (tmp_path / "keys" / f"{info.kid}.key.pem").stat().st_mode & 0o077 == 0

    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        _store(tmp_path, passphrase="not the passphrase").active()
    with pytest.raises(KeyStoreError, match="passphrase is required"):
        KeyStore(tmp_path / "keys", passphrase="")


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa"])
def test_other_algorithms(tmp_path: Path, algorithm: str) -> None:
    store = _store(tmp_path)
    store.generate(algorithm=algorithm)  # type: ignore[arg-type]
    key = _store(tmp_path).active().private_key
    if algorithm == "rsa":
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    with pytest.raises(KeyStoreError, match="at least 2048"):
        store.rotate(algorithm="rsa", rsa_bits=1024)


def test_xml_channel_key_has_a_self_signed_certificate_for_its_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    info = store.generate(channel="xml")  # RSA by default on the XML channel
    assert info.algorithm == "rsa"
    key = _store(tmp_path).active(channel="xml")
    cert = key.certificate
    assert isinstance(cert, x509.Certificate)
    assert cert.public_key().public_numbers() == key.private_key.public_key().public_numbers()
    assert cert.issuer == cert.subject
    assert cert.not_valid_before_utc <= T0 < cert.not_valid_after_utc
    # Self-signed: the certificate's signature verifies under its own key.
    cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                             cert.signature_hash_algorithm or hashes.SHA256())
    assert info.channel == "xml" and store.active_info(channel="json") is None
    with pytest.raises(KeyStoreError, match="RSA or ECDSA"):
        store.rotate(channel="xml", algorithm="ed25519")
    ecdsa = store.rotate(channel="xml", algorithm="ecdsa-p256")
    ec_cert = _store(tmp_path).active(channel="xml").certificate
    assert ec_cert is not None and ecdsa.kid in ec_cert.subject.rfc4514_string()
    ec_cert.public_key().verify(ec_cert.signature, ec_cert.tbs_certificate_bytes,  # type: ignore[call-arg]
                                ec.ECDSA(ec_cert.signature_hash_algorithm))  # type: ignore[arg-type]


def test_generate_twice_on_one_channel_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.generate()
    with pytest.raises(KeyStoreError, match="rotate"):
        store.generate()


def test_rotation_keeps_the_old_key_verifying_during_the_overlap_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old = store.generate()
    old_signature = store.active().private_key.sign(b"in flight")
    at = T0 + timedelta(hours=1)
    new = store.rotate(overlap=timedelta(hours=24), now=at)

    fresh = _store(tmp_path)
    assert fresh.active().kid == new.kid  # the new key signs
    retired = next(i for i in fresh.list() if i.kid == old.kid)
    assert retired.retired_at == at and retired.not_after == at + timedelta(hours=24) and not retired.active

    during = at + timedelta(hours=23, minutes=59)
    assert {k.kid for k in fresh.verification_keys(now=during)} == {old.kid, new.kid}
    public = fresh.public_key(old.kid, now=during)
    assert public is not None
    public.verify(old_signature, b"in flight")  # an in-flight message still verifies

    after = at + timedelta(hours=24)
    assert [k.kid for k in fresh.verification_keys(now=after)] == [new.kid]
    assert fresh.public_key(old.kid, now=after) is None
    assert [k["kid"] for k in fresh.jwks(now=after)["keys"]] == [new.kid]


def test_revoked_key_neither_signs_nor_verifies(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = store.generate()
    second = store.rotate(overlap=timedelta(days=7), now=T0 + timedelta(minutes=1))
    store.revoke(first.kid, reason="leaked", now=T0 + timedelta(minutes=2))
    fresh = _store(tmp_path)
    when = T0 + timedelta(minutes=3)  # well inside the overlap, which revocation overrides
    assert fresh.public_key(first.kid, now=when) is None
    assert [k.kid for k in fresh.verification_keys(now=when)] == [second.kid]
    revoked = next(i for i in fresh.list() if i.kid == first.kid)
    assert revoked.revoked and revoked.revoked_reason == "leaked"

    fresh.revoke(second.kid, now=when)
    with pytest.raises(KeyStoreError, match="no active key"):
        fresh.active()
    assert fresh.jwks(now=when) == {"keys": []}
    with pytest.raises(KeyStoreError, match="no key"):
        fresh.revoke("nope")


def test_jwks_shape_for_every_key_type(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ed = store.generate()
    ecdsa = store.rotate(algorithm="ecdsa-p256", overlap=timedelta(days=1))
    xml = store.generate(algorithm="rsa", channel="xml")
    jwks = store.jwks()
    json.dumps(jwks)  # serialisable as the body of GET /v1/keys
    by_kid = {k["kid"]: k for k in jwks["keys"]}
    assert set(by_kid) == {ed.kid, ecdsa.kid, xml.kid}

    okp = by_kid[ed.kid]
    assert {k: okp[k] for k in ("kty", "crv", "use", "alg")} == {"kty": "OKP", "crv": "Ed25519", "use": "sig",
                                                                  "alg": "EdDSA"}
    ed_public = next(k.public_key for k in store.verification_keys() if k.kid == ed.kid)
    raw = ed_public.public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw)
    assert base64.urlsafe_b64decode(okp["x"] + "=") == raw and "d" not in okp

    p256 = by_kid[ecdsa.kid]
    assert (p256["kty"], p256["crv"], p256["alg"]) == ("EC", "P-256", "ES256") and "d" not in p256
    numbers = store.active().private_key.public_key().public_numbers()
    assert (_b64url_int(p256["x"]), _b64url_int(p256["y"])) == (numbers.x, numbers.y)

    rsa_jwk = by_kid[xml.kid]
    assert (rsa_jwk["kty"], rsa_jwk["alg"], _b64url_int(rsa_jwk["e"])) == ("RSA", "RS256", 65537)
    assert not {"d", "p", "q"} & set(rsa_jwk)
    cert = x509.load_der_x509_certificate(base64.b64decode(rsa_jwk["x5c"][0]))
    assert cert.public_key().public_numbers().n == _b64url_int(rsa_jwk["n"])

    # kid is the RFC 7638 thumbprint of the published members, so a counterpart can recompute it.
    assert ed.kid == jwk_thumbprint(ed_public)
