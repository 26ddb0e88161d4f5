"""The gateway's peers' keys: the instances' pinned public keys and certificates, and peer key pairs."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.canonical.errors import ConfigError
from gateway.mapping import Mappings, key_file
from security.httpsig import HttpSigner
from security.keys import (
    DEFAULT_CERT_VALIDITY,
    PrivateKey,
    PublicKey,
    _new_private_key,
    _self_signed,
    _write_atomic,
    jwk_thumbprint,
)
from security.xmlsig import SignxmlSigner, fingerprint


class PinError(ValueError):
    """A pinned key or certificate that cannot be used."""


@dataclass(frozen=True)
class PinnedKey:
    """A peer's public key as pinned by configuration; `kid` is its RFC 7638 thumbprint."""

    kid: str
    public_key: PublicKey
    certificate: x509.Certificate | None = None

    @functools.cached_property
    def fingerprint(self) -> str | None:  # asked on every verification: computed once
        return fingerprint(self.certificate) if self.certificate is not None else None


def _public_from_jwk(doc: dict[str, object]) -> PublicKey:
    def b64(name: str) -> bytes:
        import base64

        value = doc.get(name)
        if not isinstance(value, str):
            raise PinError(f"JWK member {name!r} missing")
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))

    kty = doc.get("kty")
    if kty == "OKP" and doc.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(b64("x"))
    if kty == "EC" and doc.get("crv") == "P-256":
        return ec.EllipticCurvePublicNumbers(int.from_bytes(b64("x"), "big"), int.from_bytes(b64("y"), "big"),
                                             ec.SECP256R1()).public_key()
    if kty == "RSA":
        key = rsa.RSAPublicNumbers(int.from_bytes(b64("e"), "big"), int.from_bytes(b64("n"), "big")).public_key()
        if key.key_size < 2048:
            raise PinError("RSA keys shorter than 2048 bits are not accepted")
        return key
    raise PinError(f"unsupported JWK kty={kty!r} crv={doc.get('crv')!r}")


def parse_pin(data: bytes) -> PinnedKey:
    """A PEM certificate, a PEM public key or a JWK (JSON) as a pinned key."""
    text = data.strip()
    try:
        if text.startswith(b"{"):
            key = _public_from_jwk(json.loads(text))
            return PinnedKey(jwk_thumbprint(key), key)
        if b"BEGIN CERTIFICATE" in text:
            cert = x509.load_pem_x509_certificate(text)
            key = cert.public_key()
            if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
                raise PinError(f"unsupported certificate key {type(key).__name__}")
            return PinnedKey(jwk_thumbprint(key), key, cert)
        if b"BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text)
            if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
                raise PinError(f"unsupported public key {type(key).__name__}")
            return PinnedKey(jwk_thumbprint(key), key)
    except PinError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PinError(f"not a readable key: {type(exc).__name__}: {exc}") from exc
    raise PinError("expected a PEM certificate, a PEM public key or a JWK")


def load_pin(path: Path) -> PinnedKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PinError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_pin(data)


def load_pins(mappings: Mappings, *, counterparts_file: Path, home: Path) -> dict[str, tuple[PinnedKey, ...]]:
    """Each instance's pinned keys, read from the files its `keys` name; ConfigError names file and field."""
    errors: list[str] = []
    pins: dict[str, tuple[PinnedKey, ...]] = {}
    for i, inst in enumerate(mappings.counterparts.instances):
        keys = []
        for j, name in enumerate(inst.keys):
            try:
                if name.lstrip().startswith(("-----BEGIN", "{")):  # given inline, e.g. through the admin API
                    keys.append(parse_pin(name.encode()))
                else:
                    keys.append(load_pin(key_file(name, counterparts_file=counterparts_file, home=home)))
            except PinError as exc:
                errors.append(f"{counterparts_file}: instances.{i}.keys.{j}: {exc}")
        pins[inst.name] = tuple(keys)
    if errors:
        raise ConfigError("invalid pinned keys:\n" + "\n".join(f"  {e}" for e in errors)
                          + "\n  (the simulators' keys are created by `gateway simulators` or `gateway demo`)")
    return pins


@dataclass(frozen=True)
class PartyKey:
    """A peer's own key pair with a self-signed certificate (simulators, test clients, the demo's clients)."""

    name: str
    private_key: PrivateKey
    certificate: x509.Certificate
    directory: Path

    @property
    def kid(self) -> str:
        return jwk_thumbprint(self.private_key.public_key())

    @property
    def certificate_path(self) -> Path:
        return self.directory / f"{self.name}.crt.pem"

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def http_signer(self, **kwargs: object) -> HttpSigner:
        return HttpSigner(keyid=self.kid, private_key=self.private_key, **kwargs)  # type: ignore[arg-type]

    def xml_signer(self) -> SignxmlSigner:
        return SignxmlSigner(key=self.private_key, certificate=self.certificate)  # type: ignore[arg-type]


def ensure_party_key(directory: Path, name: str, *,
                     algorithm: Literal["ed25519", "ecdsa-p256", "rsa"] = "ed25519") -> PartyKey:
    """Load `name`'s key pair from `directory`, creating it first if absent.

    The private key is written unencrypted (mode 0600): these are the keys of simulators, test clients and
    the demo, which must start unattended; the gateway's own keys live encrypted in security.keys.KeyStore.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{name}.key.pem", directory / f"{name}.crt.pem"
    if key_path.exists() and cert_path.exists():
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return PartyKey(name, private, cert, directory)  # type: ignore[arg-type]
    private = _new_private_key(algorithm, 2048)
    kid = jwk_thumbprint(private.public_key())
    cert = _self_signed(private, subject_cn=name, kid=kid, now=datetime.now(timezone.utc) - timedelta(minutes=1),
                        validity=DEFAULT_CERT_VALIDITY)
    _write_atomic(key_path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return PartyKey(name, private, cert, directory)
