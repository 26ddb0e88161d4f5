"""Personal data at rest: a keyed hash to search by IIN, AES-256-GCM with rotating key ids to keep it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.canonical.iin import mask_iin

VERSION = "v1"
KEY_BYTES = 32
MIN_HASH_KEY_BYTES = 32
NONCE_BYTES = 12
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class PiiError(ValueError):
    """Bad key material, or a ciphertext that is malformed, under an unknown key, or not authentic."""


def _b64decode(value: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PiiError(f"{what} is not base64") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(value: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", value):
        raise PiiError("ciphertext is not base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def parse_keys(spec: str) -> dict[str, bytes]:
    """`kid1:base64,kid2:base64` (the first is the active one) -> {kid: 32-byte key}, order kept."""
    keys: dict[str, bytes] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        kid, sep, encoded = part.partition(":")
        if not sep:
            raise PiiError(f"key entry {kid!r} needs the form kid:base64")
        if kid in keys:
            raise PiiError(f"key id {kid!r} is given twice")
        keys[kid] = _b64decode(encoded, what=f"key {kid!r}")
    if not keys:
        raise PiiError("no personal-data encryption key given (kid:base64,...)")
    return keys


def generate_key() -> str:
    """A fresh 32-byte key in base64, for an operator to put in the key list."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class PiiCipher:
    """Keyed hash and authenticated encryption of personal data (IINs, names) in the store.

    Ciphertexts read `v1.<kid>.<base64url(nonce || ciphertext || tag)>`: the key id says which key
    decrypts, so keys rotate without a flag day (encrypt with the active key, decrypt with any known
    key, `rotate` re-encrypts). The version and kid, plus an optional caller context (e.g. the column
    name), are authenticated data: a ciphertext moved to another column or relabelled does not open.
    The keyed hash (HMAC-SHA256) has one key of its own, since rotating it would break every lookup."""

    def __init__(self, keys: Mapping[str, bytes], *, hash_key: bytes, active: str | None = None) -> None:
        if not keys:
            raise PiiError("at least one encryption key is needed")
        for kid, key in keys.items():
            if not _KID.fullmatch(kid):
                raise PiiError(f"key id {kid!r} must be 1-32 of A-Z a-z 0-9 _ -")
            if len(key) != KEY_BYTES:
                raise PiiError(f"key {kid!r} must be {KEY_BYTES} bytes, not {len(key)}")
        if len(hash_key) < MIN_HASH_KEY_BYTES:
            raise PiiError(f"the hash key must be at least {MIN_HASH_KEY_BYTES} bytes, not {len(hash_key)}")
        self._active = active if active is not None else next(iter(keys))
        if self._active not in keys:
            raise PiiError(f"active key {self._active!r} is not among the keys")
        self._aead = {kid: AESGCM(bytes(key)) for kid, key in keys.items()}
        self._hash_key = bytes(hash_key)

    @classmethod
    def from_config(cls, keys: str, *, hash_key: str) -> PiiCipher:
        """From settings values: `kid1:base64,kid2:base64` (first active) and the hash key in base64."""
        return cls(parse_keys(keys), hash_key=_b64decode(hash_key, what="the hash key"))

    @property
    def active_kid(self) -> str:
        return self._active

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._aead)

    def hash(self, value: str) -> str:
        """HMAC-SHA256 hex of the exact value: equal values give equal hashes, for search without clear text."""
        return hmac.new(self._hash_key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def _aad(self, kid: str, context: str) -> bytes:
        return f"{VERSION}.{kid}.{context}".encode()

    def encrypt(self, value: str, *, context: str = "") -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self._active].encrypt(nonce, value.encode("utf-8"), self._aad(self._active, context))
        return f"{VERSION}.{self._active}.{_b64url(nonce + sealed)}"

    def key_id(self, token: str) -> str:
        """The key id a ciphertext names (without decrypting it)."""
        return self._split(token)[1]

    def _split(self, token: str) -> tuple[str, str, str]:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise PiiError(f"not a {VERSION} personal-data ciphertext")
        return parts[0], parts[1], parts[2]

    def decrypt(self, token: str, *, context: str = "") -> str:
        _, kid, body = self._split(token)
        aead = self._aead.get(kid)
        if aead is None:
            raise PiiError(f"ciphertext is under key {kid!r}, which this gateway does not have")
        raw = _b64url_decode(body)
        if len(raw) < NONCE_BYTES + 16:
            raise PiiError("ciphertext is too short")
        try:
            plain = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(kid, context))
        except InvalidTag:
            raise PiiError(f"ciphertext does not authenticate under key {kid!r} (altered, or another context)") from None
        return plain.decode("utf-8")

    def needs_rotation(self, token: str) -> bool:
        return self.key_id(token) != self._active

    def rotate(self, token: str, *, context: str = "") -> str:
        """The value re-encrypted under the active key (a fresh nonce even when already under it)."""
        return self.encrypt(self.decrypt(token, context=context), context=context)

    @staticmethod
    def mask(iin: str) -> str:
        """For display and exports: `9001******17`."""
        return mask_iin(iin)
