"""The gateway's own signing keys: generated, encrypted at rest, rotated with overlap, published as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

Algorithm = Literal["ed25519", "ecdsa-p256", "rsa"]
Channel = Literal["json", "xml"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

ALGORITHMS: tuple[Algorithm, ...] = ("ed25519", "ecdsa-p256", "rsa")
CHANNELS: tuple[Channel, ...] = ("json", "xml")
MIN_RSA_BITS = 2048
DEFAULT_OVERLAP = timedelta(days=2)
_DEFAULT_ALGORITHM: dict[str, Algorithm] = {"json": "ed25519", "xml": "rsa"}
DEFAULT_CERT_VALIDITY = timedelta(days=730)

# JWS "alg" each key is used with (RFC 7518 / RFC 8037): HTTP signatures use rsa-pss-sha512 for RSA
# (RFC 9421 3.3.1), XML-DSig uses rsa-sha256, so the same key type publishes a different alg per channel.
_JWK_ALG: dict[tuple[Algorithm, Channel], str] = {
    ("ed25519", "json"): "EdDSA",
    ("ed25519", "xml"): "EdDSA",
    ("ecdsa-p256", "json"): "ES256",
    ("ecdsa-p256", "xml"): "ES256",
    ("rsa", "json"): "PS512",
    ("rsa", "xml"): "RS256",
}


class KeyStoreError(Exception):
    """A key operation that cannot be done: no active key, unknown kid, bad passphrase, bad options."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What is known about one key, as stored next to it (never the private part)."""

    kid: str
    algorithm: Algorithm
    channel: Channel
    created: datetime
    retired_at: datetime | None = None  # stopped signing (rotation); still verifies until not_after
    not_after: datetime | None = None  # no longer valid for verification from this instant
    revoked_at: datetime | None = None
    revoked_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def active(self) -> bool:
        return self.retired_at is None and self.revoked_at is None

    def valid_at(self, now: datetime) -> bool:
        """Whether a signature by this key may be accepted at `now`."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        if self.not_after is not None and now >= self.not_after:
            return False
        return self.created <= now

    def to_json(self) -> dict[str, object]:
        def ts(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "kid": self.kid,
            "algorithm": self.algorithm,
            "channel": self.channel,
            "created": ts(self.created),
            "retired_at": ts(self.retired_at),
            "not_after": ts(self.not_after),
            "revoked_at": ts(self.revoked_at),
            "revoked_reason": self.revoked_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> KeyInfo:
        def ts(value: object) -> datetime | None:
            return datetime.fromisoformat(str(value)) if value is not None else None

        created = ts(data["created"])
        assert created is not None
        return cls(
            kid=str(data["kid"]),
            algorithm=data["algorithm"],  # type: ignore[arg-type]
            channel=data["channel"],  # type: ignore[arg-type]
            created=created,
            retired_at=ts(data.get("retired_at")),
            not_after=ts(data.get("not_after")),
            revoked_at=ts(data.get("revoked_at")),
            revoked_reason=data.get("revoked_reason"),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The active key of a channel, decrypted, ready to sign."""

    info: KeyInfo
    private_key: PrivateKey
    certificate: x509.Certificate | None = None

    @property
    def kid(self) -> str:
        return self.info.kid


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key that may verify signatures at the time it was asked for."""

    info: KeyInfo
    public_key: PublicKey
    certificate: x509.Certificate | None = None

    @property
    def kid(self) -> str:
        return self.info.kid


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The required members of a public key's JWK (RFC 7517/7518, RFC 8037 for OKP)."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise KeyStoreError(f"unsupported curve {public_key.curve.name}")
        numbers = public_key.public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"e": _b64url(_int_bytes(numbers.e)), "kty": "RSA", "n": _b64url(_int_bytes(numbers.n))}
    raise KeyStoreError(f"unsupported key type {type(public_key).__name__}")


def jwk_thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 thumbprint: a kid any party can recompute from the public key alone."""
    canonical = json.dumps(public_jwk(public_key), sort_keys=True, separators=(",", ":")).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _new_private_key(algorithm: Algorithm, rsa_bits: int) -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa":
        if rsa_bits < MIN_RSA_BITS:
            raise KeyStoreError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {rsa_bits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise KeyStoreError(f"unknown algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")


def _self_signed(private_key: PrivateKey, *, subject_cn: str, kid: str, now: datetime,
                 validity: timedelta) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kid),  # ties the certificate to the JWKS kid
    ])
    # Ed25519 certificates are signed without a separate hash (RFC 8410).
    digest = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(private_key, digest)
    )


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    # A crash mid-write must leave either the old file or the new one, never half a key.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise KeyStoreError("times must carry a UTC offset")
    return value.astimezone(timezone.utc)


class KeyStore:
    """Keys as files in one directory: `<kid>.key.pem` (encrypted PKCS#8), `<kid>.json`, `<kid>.crt.pem`.

    Metadata is read from disk at construction and by `refresh()`; a process that signs every message
    should not list a directory for each one, so other processes' rotations show up after `refresh()`."""

    def __init__(self, directory: Path | str, *, passphrase: str | bytes,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 subject_cn: str = "probation-gateway") -> None:
        if not passphrase:
            raise KeyStoreError("a passphrase is required: private keys are never stored unencrypted")
        self._dir = Path(directory)
        self._passphrase = passphrase.encode() if isinstance(passphrase, str) else passphrase
        self._clock = clock
        self._subject_cn = subject_cn
        self._infos: dict[str, KeyInfo] = {}
        self._private: dict[str, PrivateKey] = {}  # decrypted once: PBKDF2 per signature would dominate
        self._loaded = False

    @property
    def directory(self) -> Path:
        return self._dir

    def _now(self, now: datetime | None) -> datetime:
        return _utc(now if now is not None else self._clock())

    def refresh(self) -> None:
        infos: dict[str, KeyInfo] = {}
        if self._dir.is_dir():
            for meta in sorted(self._dir.glob("*.json")):
                info = KeyInfo.from_json(json.loads(meta.read_bytes()))
                infos[info.kid] = info
        self._infos = infos
        self._loaded = True

    def _ensure(self) -> dict[str, KeyInfo]:
        if not self._loaded:
            self.refresh()
        return self._infos

    def _save(self, info: KeyInfo) -> None:
        _write_atomic(self._dir / f"{info.kid}.json",
                      json.dumps(info.to_json(), indent=2, sort_keys=True).encode() + b"\n", mode=0o644)
        self._infos[info.kid] = info

    # ---- operations -----------------------------------------------------------------------------

    def generate(self, *, algorithm: Algorithm | None = None, channel: Channel = "json",
                 rsa_bits: int = MIN_RSA_BITS, now: datetime | None = None,
                 cert_validity: timedelta = DEFAULT_CERT_VALIDITY) -> KeyInfo:
        """A channel's first key, made active; a channel that already has one needs `rotate`.

        The algorithm defaults to Ed25519 for the JSON channel and RSA for the XML channel."""
        if self.active_info(channel=channel) is not None:
            raise KeyStoreError(f"channel {channel!r} already has an active key; rotate it instead")
        return self._create(algorithm=algorithm or _DEFAULT_ALGORITHM[channel], channel=channel, rsa_bits=rsa_bits, now=self._now(now),
                            cert_validity=cert_validity)

    def _create(self, *, algorithm: Algorithm, channel: Channel, rsa_bits: int, now: datetime,
                cert_validity: timedelta) -> KeyInfo:
        if channel not in CHANNELS:
            raise KeyStoreError(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
        if channel == "xml" and algorithm == "ed25519":
            # XML-DSig verifiers of the counterparts know RSA and ECDSA, not EdDSA.
            raise KeyStoreError("the XML channel needs an RSA or ECDSA P-256 key")
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_key = _new_private_key(algorithm, rsa_bits)
        kid = jwk_thumbprint(private_key.public_key())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        _write_atomic(self._dir / f"{kid}.key.pem", pem)
        if channel == "xml":
            cert = _self_signed(private_key, subject_cn=self._subject_cn, kid=kid, now=now, validity=cert_validity)
            _write_atomic(self._dir / f"{kid}.crt.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        info = KeyInfo(kid=kid, algorithm=algorithm, channel=channel, created=now)
        # Metadata last: a key without metadata is ignored, so a crash never leaves a half-made active key.
        self._save(info)
        self._private[kid] = private_key
        return info

    def rotate(self, *, channel: Channel = "json", overlap: timedelta = DEFAULT_OVERLAP,
               algorithm: Algorithm | None = None, rsa_bits: int = MIN_RSA_BITS, now: datetime | None = None,
               cert_validity: timedelta = DEFAULT_CERT_VALIDITY) -> KeyInfo:
        """A new active key; the previous one stops signing now and still verifies until now + overlap."""
        if overlap < timedelta(0):
            raise KeyStoreError("overlap cannot be negative")
        at = self._now(now)
        previous = self.active_info(channel=channel)
        new = self._create(algorithm=algorithm or (previous.algorithm if previous else _DEFAULT_ALGORITHM[channel]),
                           channel=channel, rsa_bits=rsa_bits, now=at, cert_validity=cert_validity)
        if previous is not None:
            self._save(replace(previous, retired_at=at, not_after=at + overlap))
        return new

    def revoke(self, kid: str, *, reason: str | None = None, now: datetime | None = None) -> KeyInfo:
        """The key neither signs nor verifies from now on; an active key leaves its channel without one."""
        info = self._info(kid)
        if info.revoked_at is not None:
            return info
        at = self._now(now)
        revoked = replace(info, revoked_at=at, revoked_reason=reason,
                          retired_at=info.retired_at or at)
        self._save(revoked)
        self._private.pop(kid, None)
        return revoked

    def list(self) -> list[KeyInfo]:
        return sorted(self._ensure().values(), key=lambda i: (i.created, i.kid))

    def _info(self, kid: str) -> KeyInfo:
        info = self._ensure().get(kid)
        if info is None:
            raise KeyStoreError(f"no key {kid!r} in {self._dir}")
        return info

    def active_info(self, *, channel: Channel = "json") -> KeyInfo | None:
        candidates = [i for i in self._ensure().values() if i.channel == channel and i.active]
        return max(candidates, key=lambda i: i.created) if candidates else None

    def active(self, *, channel: Channel = "json") -> SigningKey:
        """The key that signs on `channel` now, decrypted with the passphrase."""
        info = self.active_info(channel=channel)
        if info is None:
            raise KeyStoreError(f"no active key for channel {channel!r}; run `gateway keys generate`")
        return SigningKey(info, self._private_key(info.kid), self._certificate(info.kid))

    def _private_key(self, kid: str) -> PrivateKey:
        key = self._private.get(kid)
        if key is None:
            pem = (self._dir / f"{kid}.key.pem").read_bytes()
            try:
                loaded = serialization.load_pem_private_key(pem, password=self._passphrase)
            except (ValueError, TypeError) as exc:
                raise KeyStoreError(f"cannot decrypt key {kid}: wrong passphrase or damaged file") from exc
            if not isinstance(loaded, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
                raise KeyStoreError(f"key {kid} has an unsupported type {type(loaded).__name__}")
            if jwk_thumbprint(loaded.public_key()) != kid:
                raise KeyStoreError(f"key file {kid}.key.pem holds another key than its name says")
            self._private[kid] = key = loaded
        return key

    def certificate(self, kid: str) -> x509.Certificate | None:
        """The key's self-signed certificate (its expiry is what operators watch), if it has one."""
        return self._certificate(kid)

    def _certificate(self, kid: str) -> x509.Certificate | None:
        path = self._dir / f"{kid}.crt.pem"
        return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None

    def verification_keys(self, *, now: datetime | None = None, channel: Channel | None = None
                          ) -> list[VerificationKey]:
        """Public keys whose signatures may be accepted at `now`: active ones and those in their overlap."""
        at = self._now(now)
        out = []
        for info in self.list():
            if (channel is None or info.channel == channel) and info.valid_at(at):
                out.append(VerificationKey(info, self._private_key(info.kid).public_key(),
                                           self._certificate(info.kid)))
        return out

    def public_key(self, kid: str, *, now: datetime | None = None) -> PublicKey | None:
        """The public key for `kid` if it may verify at `now`, else None (a resolver for httpsig)."""
        info = self._ensure().get(kid)
        if info is None or not info.valid_at(self._now(now)):
            return None
        return self._private_key(kid).public_key()

    def jwks(self, *, now: datetime | None = None) -> dict[str, list[dict[str, object]]]:
        """RFC 7517 JWK Set of every key valid for verification at `now`, for `GET /v1/keys`."""
        keys: list[dict[str, object]] = []
        for vk in self.verification_keys(now=now):
            jwk: dict[str, object] = dict(public_jwk(vk.public_key))
            jwk.update(kid=vk.kid, use="sig", alg=_JWK_ALG[(vk.info.algorithm, vk.info.channel)])
            if vk.certificate is not None:
                # x5c: standard base64 (not base64url) of the DER certificate, RFC 7517 4.7.
                jwk["x5c"] = [base64.b64encode(vk.certificate.public_bytes(serialization.Encoding.DER)).decode()]
            keys.append(jwk)
        return {"keys": keys}
