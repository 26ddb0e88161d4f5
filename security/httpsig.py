"""RFC 9421 HTTP Message Signatures with RFC 9530 Content-Digest over the gateway's wire envelopes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol
from urllib.parse import urlsplit

import http_sf
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.wire import WireRequest, WireResponse
from security.keys import PrivateKey, PublicKey

# Written from RFC 9421 and RFC 9530 rather than on the http-message-signatures package: on one 600-byte
# referral the package took ~540 µs per Ed25519 sign + verify, this code ~180 µs of which ~120 µs is the
# crypto itself (bench/sign_verify.py --with-package); the package's pure-Python structured-field work
# alone would eat most of the 20 % budget. The tests check this code against the package in both
# directions, and against RFC 9421's own example.

KeyResolver = Callable[[str], "PublicKey | None"]

LABEL = "sig1"
MAX_FUTURE_SKEW = timedelta(seconds=60)  # the bound on a sender's clock running ahead
DEFAULT_TTL = timedelta(seconds=300)
DEFAULT_MAX_AGE = timedelta(seconds=300)
REQUEST_COMPONENTS = ("@method", "@target-uri", "content-digest", "content-type")
REQUEST_BINDING = ('"@method";req', '"@target-uri";req')
RESPONSE_COMPONENTS = ("@status", "content-digest", "content-type")
REQUIRED_PARAMS = ("created", "expires", "nonce", "keyid")
KNOWN_PARAMS = frozenset({"created", "expires", "nonce", "keyid", "alg", "tag"})  # RFC 9421 section 6.3.2


# ---- errors -------------------------------------------------------------------------------------


class SignatureError(Exception):
    """A message refused by verification; `reason` is a stable slug for problem types and metrics."""

    reason = "invalid-signature"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class MissingSignature(SignatureError):
    reason = "missing-signature"


class MalformedSignature(SignatureError):
    reason = "malformed-signature"


class MissingParameter(SignatureError):
    reason = "missing-parameter"


class MissingComponent(SignatureError):
    reason = "missing-component"


class UnknownKey(SignatureError):
    reason = "unknown-key"


class AlgMismatch(SignatureError):
    reason = "alg-mismatch"


class CreatedInFuture(SignatureError):
    reason = "created-in-future"


class Expired(SignatureError):
    reason = "expired"


class BadSignature(SignatureError):
    reason = "bad-signature"


class BadDigest(SignatureError):
    reason = "bad-digest"


class ReplayedNonce(SignatureError):
    reason = "replayed-nonce"


# ---- nonce store ----------------------------------------------------------------------------------


class NonceStore(Protocol):
    """Remembers (keyid, nonce) pairs until `expires_at`; shared by every gateway process in production."""

    async def seen_or_add(self, nonce: str, *, keyid: str, expires_at: datetime) -> bool:
        """True if the pair was already recorded (a replay); otherwise record it and return False."""
        ...


class MemoryNonceStore:
    """One process's nonce store, for tests and single-process runs; entries go after they expire."""

    def __init__(self, *, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], datetime] = {}
        self._next_purge = 0.0

    async def seen_or_add(self, nonce: str, *, keyid: str, expires_at: datetime) -> bool:
        # No lock: nothing below awaits, so on one event loop the check and the insert cannot interleave.
        now = self._clock()
        if time.monotonic() >= self._next_purge:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            self._next_purge = time.monotonic() + 10.0
        key = (keyid, nonce)
        previous = self._seen.get(key)
        if previous is not None and previous > now:
            return True
        self._seen[key] = expires_at
        return False


# ---- algorithms (RFC 9421 section 3.3) ----------------------------------------------------------------------

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)  # 3.3.1: MGF1 SHA-512, 64-byte salt
_ECDSA = {"ecdsa-p256-sha256": (ec.ECDSA(hashes.SHA256()), 32), "ecdsa-p384-sha384": (ec.ECDSA(hashes.SHA384()), 48)}


def algorithms_for(key: PublicKey | PrivateKey) -> tuple[str, ...]:
    """RFC 9421 algorithms a key of this type may be used with, the signing default first.

    The pinned key decides the algorithm, never the message's `alg`: an Ed25519 key cannot be
    turned into an HMAC secret or an RSA key by a header."""
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return ("ed25519",)
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return ("ecdsa-p256-sha256",)
        if isinstance(key.curve, ec.SECP384R1):
            return ("ecdsa-p384-sha384",)
        raise ValueError(f"unsupported curve {key.curve.name}")
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        if key.key_size < 2048:
            raise ValueError("RSA keys under 2048 bits are refused")
        return ("rsa-pss-sha512", "rsa-v1_5-sha256")
    raise ValueError(f"unsupported key type {type(key).__name__}")


def _sign_bytes(alg: str, key: PrivateKey, base: bytes) -> bytes:
    if alg == "ed25519":
        return key.sign(base)  # type: ignore[call-arg,union-attr]
    if alg in _ECDSA:
        scheme, size = _ECDSA[alg]
        r, s = decode_dss_signature(key.sign(base, scheme))  # type: ignore[call-arg,arg-type,union-attr]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")  # 3.3.4: fixed-size r || s, not DER
    if alg == "rsa-pss-sha512":
        return key.sign(base, _PSS, hashes.SHA512())  # type: ignore[call-arg,arg-type,union-attr]
    if alg == "rsa-v1_5-sha256":
        return key.sign(base, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg,arg-type,union-attr]
    raise ValueError(f"unsupported algorithm {alg}")


def _verify_bytes(alg: str, key: PublicKey, signature: bytes, base: bytes) -> bool:
    try:
        if alg == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, base)
        elif alg in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            scheme, size = _ECDSA[alg]
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
            key.verify(der, base, scheme)
        elif alg == "rsa-pss-sha512" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, base, _PSS, hashes.SHA512())
        elif alg == "rsa-v1_5-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, base, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


# ---- RFC 9530 Content-Digest -----------------------------------------------------------------------------

_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
# The common one-member shapes of Signature and Content-Digest, read without the general (slower,
# pure-Python) structured-field parser; anything else goes through http_sf.
_ONE_BYTESEQ = re.compile(r"([a-z*][a-z0-9_.*-]{0,63})=:([A-Za-z0-9+/]*={0,2}):")


# Signature-Input as this gateway and most signers write it: one label, quoted lowercase component
# names (optionally ;req), integer and plain-string parameters. Anything else goes through http_sf.
_KEY = r"[a-z*][a-z0-9_.*-]{0,63}"
_SIG_INPUT = re.compile(
    rf'({_KEY})=\(((?:"[a-z0-9@_.-]+"(?:;req)?(?: (?="))?)*)\)((?:;{_KEY}=(?:-?[0-9]{{1,15}}|"[ !#-\[\]-~]*"))*)')
_SIG_COMPONENT = re.compile(r'"([a-z0-9@_.-]+)"(;req)?')
_SIG_PARAM = re.compile(rf';({_KEY})=(?:(-?[0-9]+)|"([^"]*)")')


def _parse_signature_input(value: str) -> dict[str, tuple[object, dict[str, object]]]:
    match = _SIG_INPUT.fullmatch(value.strip(" "))
    if match is None:
        return http_sf.parse(value.encode("ascii"), tltype="dictionary")
    members = [(name, {"req": True} if req else {}) for name, req in _SIG_COMPONENT.findall(match[2])]
    params: dict[str, object] = {}
    for key, number, text in _SIG_PARAM.findall(match[3]):
        params[key] = int(number) if number else text
    return {match[1]: (members, params)}


def _one_byteseq(value: str) -> dict[str, tuple[object, dict[str, object]]]:
    match = _ONE_BYTESEQ.fullmatch(value.strip(" "))
    if match is not None:
        try:
            return {match[1]: (base64.b64decode(match[2], validate=True), {})}
        except binascii.Error:
            pass  # let the full parser give its verdict
    return http_sf.parse(value.encode("ascii"), tltype="dictionary")


def content_digest(body: bytes, *, algorithm: str = "sha-256") -> str:
    """An RFC 9530 Content-Digest field value for the exact body bytes."""
    return f"{algorithm}=:{base64.b64encode(_DIGESTS[algorithm](body).digest()).decode('ascii')}:"


def check_content_digest(value: str, body: bytes) -> None:
    """Every sha-256 / sha-512 member must match the body; at least one must be there. Others are ignored."""
    try:
        members = _one_byteseq(value)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise BadDigest("Content-Digest is not a structured dictionary") from exc
    checked = 0
    for algorithm, (digest, _params) in members.items():
        hasher = _DIGESTS.get(algorithm)
        if hasher is None:
            continue
        if not isinstance(digest, bytes) or not hmac.compare_digest(digest, hasher(body).digest()):
            raise BadDigest(f"{algorithm} digest does not match the body")
        checked += 1
    if not checked:
        raise BadDigest("Content-Digest has no sha-256 or sha-512 member")


# ---- the signature base (RFC 9421 section 2) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Message:
    """What components are taken from: a request (method, target URI) or a response (status, its request)."""

    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]
    method: str | None = None
    target_uri: str | None = None
    status: int | None = None
    request: _Message | None = None

    def field(self, name: str) -> str | None:
        # 2.1: field lines with the same name are combined with ", ", each stripped of surrounding OWS.
        values = [v.strip(" \t") for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


def _derived(msg: _Message, name: str) -> str:
    if name == "@status":
        if msg.status is None:
            raise MalformedSignature("@status in a request signature")
        return str(msg.status)
    if msg.method is None or msg.target_uri is None:
        raise MalformedSignature(f"{name} needs a request (use ;req in a response signature)")
    if name == "@method":
        return msg.method  # 2.2.1: case-sensitive, never normalised
    if name == "@target-uri":
        return msg.target_uri
    parts = urlsplit(msg.target_uri)
    if name == "@authority":
        host = (parts.hostname or "").lower()
        port = parts.port
        return host if port is None or (parts.scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    if name == "@scheme":
        return parts.scheme.lower()
    if name == "@path":
        return parts.path or "/"
    if name == "@query":
        return "?" + parts.query
    if name == "@request-target":
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raise MalformedSignature(f"derived component {name} is not supported")


def _component_id(name: str, req: bool) -> str:
    return f'"{name}";req' if req else f'"{name}"'


def _ser_param(value: object) -> str:
    if type(value) is bool:
        return "" if value else "=?0"
    if type(value) is int:
        return f"={value}"
    if type(value) is str:
        return '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise MalformedSignature(f"unsupported parameter value {value!r}")


def _signature_params(components: list[tuple[str, bool]], params: dict[str, object]) -> str:
    inner = " ".join(_component_id(name, req) for name, req in components)
    return f"({inner})" + "".join(f";{k}{_ser_param(v)}" for k, v in params.items())


def _signature_base(msg: _Message, components: list[tuple[str, bool]], params_value: str) -> bytes:
    lines = []
    for name, req in components:
        source = msg
        if req:
            if msg.request is None:
                raise MalformedSignature(f"{name};req without the request")
            source = msg.request
        if name.startswith("@"):
            value = _derived(source, name)
        else:
            found = source.field(name)
            if found is None:
                raise MissingComponent(f"covered field {name!r} is absent from the message")
            value = found
        lines.append(f"{_component_id(name, req)}: {value}")
    lines.append(f'"@signature-params": {params_value}')
    base = "\n".join(lines)
    # 2.5: no CR/LF may smuggle an extra line in, and the base is ASCII.
    if "\r" in base or base.count("\n") != len(lines) - 1 or not base.isascii():
        raise MalformedSignature("a covered value has a line break or non-ASCII characters")
    return base.encode("ascii")


def _parse_components(spec: Iterable[str]) -> list[tuple[str, bool]]:
    out = []
    for item in spec:
        name, _, flag = item.partition(";")
        out.append((name.strip('"'), flag == "req"))
    return out


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("times must carry a UTC offset")
    return value.astimezone(timezone.utc)


# ---- signing --------------------------------------------------------------------------------------


def _strip_signature(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    # A re-signed retry must carry one signature, not the previous attempt's as well.
    return [(k, v) for k, v in headers if k.lower() not in ("signature", "signature-input")]


class HttpSigner:
    """Signs outbound requests and the gateway's responses with one private key under one keyid."""

    def __init__(self, *, keyid: str, private_key: PrivateKey, alg: str | None = None,
                 ttl: timedelta = DEFAULT_TTL, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
                 ) -> None:
        allowed = algorithms_for(private_key)
        self.alg = alg or allowed[0]
        if self.alg not in allowed:
            raise ValueError(f"algorithm {self.alg} does not fit a {type(private_key).__name__}")
        if not keyid.isascii() or not keyid.isprintable():
            raise ValueError("keyid must be printable ASCII")
        self.keyid = keyid
        self.ttl = ttl
        self._key = private_key
        self._clock = clock

    def _sign(self, msg: _Message, *, body: bytes, components: tuple[str, ...], now: datetime | None,
              nonce: str | None) -> list[tuple[str, str]]:
        headers = _strip_signature(msg.headers)
        existing = [v for k, v in headers if k.lower() == "content-digest"]
        if existing:
            check_content_digest(", ".join(existing), body)  # an adapter's digest must be of these bytes
        else:
            headers.append(("Content-Digest", content_digest(body)))
        msg = _Message(headers, msg.method, msg.target_uri, msg.status, msg.request)
        has_type = msg.field("content-type") is not None
        covered = _parse_components(c for c in components if c != "content-type" or has_type)
        created = int(_utc(now if now is not None else self._clock()).timestamp())
        params: dict[str, object] = {
            "created": created,
            "expires": created + int(self.ttl.total_seconds()),
            "nonce": nonce or secrets.token_urlsafe(16),
            "keyid": self.keyid,
            "alg": self.alg,
        }
        params_value = _signature_params(covered, params)
        signature = _sign_bytes(self.alg, self._key, _signature_base(msg, covered, params_value))
        headers.append(("Signature-Input", f"{LABEL}={params_value}"))
        headers.append(("Signature", f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:"))
        return headers

    def sign_request(self, request: WireRequest, *, target_uri: str, now: datetime | None = None,
                     nonce: str | None = None) -> WireRequest:
        """`request` with Content-Digest, Signature-Input and Signature; `target_uri` is the absolute URL sent to."""
        msg = _Message(request.headers, method=request.method, target_uri=target_uri)
        lines = self._sign(msg, body=request.body, components=REQUEST_COMPONENTS, now=now, nonce=nonce)
        return WireRequest(request.method, request.path, tuple(lines), request.body)

    def sign_response(self, response: WireResponse, *, request: WireRequest | None = None,
                      target_uri: str | None = None, now: datetime | None = None,
                      nonce: str | None = None) -> WireResponse:
        """`response` signed; with the request it answers, also bound to that request's method and URI."""
        req, components = _request_binding(request, target_uri)
        msg = _Message(response.headers, status=response.status, request=req)
        lines = self._sign(msg, body=response.body, components=components, now=now, nonce=nonce)
        return WireResponse(response.status, tuple(lines), response.body)


def _request_binding(request: WireRequest | None, target_uri: str | None
                     ) -> tuple[_Message | None, tuple[str, ...]]:
    if request is None:
        return None, RESPONSE_COMPONENTS
    if target_uri is None:
        raise ValueError("binding a response to its request needs the request's target_uri")
    return _Message(request.headers, method=request.method, target_uri=target_uri), RESPONSE_COMPONENTS + REQUEST_BINDING


# ---- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verified:
    """What a valid signature established."""

    keyid: str
    alg: str
    created: datetime
    expires: datetime
    nonce: str
    covered: tuple[str, ...]


class HttpVerifier:
    """Verifies requests, responses and callbacks against keys pinned per keyid by the caller."""

    def __init__(self, *, resolve_key: KeyResolver, nonces: NonceStore, max_age: timedelta = DEFAULT_MAX_AGE,
                 max_future_skew: timedelta = MAX_FUTURE_SKEW,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 executor: Executor | None = None) -> None:
        if max_future_skew > MAX_FUTURE_SKEW:
            raise ValueError(f"clock skew ahead is at most {MAX_FUTURE_SKEW}")
        self._resolve = resolve_key
        self._nonces = nonces
        self._max_age = max_age
        self._skew = max_future_skew
        self._clock = clock
        # The public-key operation releases the GIL: on a thread it runs beside the event loop on another core.
        self._executor = executor

    async def verify_request(self, request: WireRequest, *, target_uri: str, now: datetime | None = None) -> Verified:
        return await self.verify_inbound(method=request.method, target_uri=target_uri, headers=request.headers,
                                         body=request.body, now=now)

    async def verify_inbound(self, *, method: str, target_uri: str, headers: Iterable[tuple[str, str]], body: bytes,
                             now: datetime | None = None) -> Verified:
        """A request as received: method, the absolute URI it was sent to, its field lines, its body bytes."""
        msg = _Message(tuple(headers), method=method, target_uri=target_uri)
        return await self._verify(msg, body=body, required=REQUEST_COMPONENTS, now=now)

    async def verify_response(self, response: WireResponse, *, request: WireRequest | None = None,
                              target_uri: str | None = None, now: datetime | None = None) -> Verified:
        """A counterpart's response; with `request` given, it must also be bound to that request."""
        req, required = _request_binding(request, target_uri)
        msg = _Message(response.headers, status=response.status, request=req)
        return await self._verify(msg, body=response.body, required=required, now=now)

    async def _verify(self, msg: _Message, *, body: bytes, required: tuple[str, ...],
                      now: datetime | None) -> Verified:
        sig_input_value = msg.field("signature-input")
        sig_value = msg.field("signature")
        if sig_input_value is None or sig_value is None:
            raise MissingSignature("no Signature-Input and Signature fields")
        try:
            inputs = _parse_signature_input(sig_input_value)
            sigs = _one_byteseq(sig_value)
        except (ValueError, TypeError, UnicodeEncodeError, binascii.Error) as exc:
            raise MalformedSignature("Signature-Input or Signature is not a structured dictionary") from exc
        if len(inputs) != 1 or set(inputs) != set(sigs):
            # One signature per message in this profile: selecting among several needs a tag policy.
            raise MalformedSignature(f"expected exactly one signature label, got {sorted(inputs)} / {sorted(sigs)}")
        label = next(iter(inputs))
        members, params = inputs[label]
        signature = sigs[label][0]
        if not isinstance(members, list) or not isinstance(signature, bytes):
            raise MalformedSignature("Signature-Input must be an inner list and Signature a byte sequence")

        components: list[tuple[str, bool]] = []
        for value, item_params in members:
            if type(value) is not str or value != value.lower() or any(k != "req" for k in item_params) \
                    or item_params.get("req", True) is not True:
                raise MalformedSignature(f"unsupported component {value!r} {item_params}")
            components.append((value, bool(item_params)))
        if len(set(components)) != len(components):
            raise MalformedSignature("a component is covered twice")
        unknown = set(params) - KNOWN_PARAMS
        if unknown:
            raise MalformedSignature(f"unknown signature parameters {sorted(unknown)}")
        for name in REQUIRED_PARAMS:
            if name not in params:
                raise MissingParameter(f"signature parameter {name!r} is required")
        keyid, nonce = params["keyid"], params["nonce"]
        created_ts, expires_ts = params["created"], params["expires"]
        if not (type(keyid) is str and type(nonce) is str and type(created_ts) is int and type(expires_ts) is int):
            raise MalformedSignature("keyid and nonce must be strings, created and expires integers")

        covered = tuple(_component_id(name, req) for name, req in components)
        for component in required:
            name, req = _parse_components((component,))[0]
            if name == "content-type" and not body and (msg.request if req else msg).field("content-type") is None:
                continue  # a bodiless message without a content type has none to protect
            if (name, req) not in components:
                raise MissingComponent(f"{component} is not covered by the signature")

        key = self._resolve(keyid)
        if key is None:
            raise UnknownKey(f"no key pinned for keyid {keyid!r}")
        try:
            allowed = algorithms_for(key)
        except ValueError as exc:
            raise UnknownKey(f"the key pinned for {keyid!r} cannot verify: {exc}") from exc
        alg = params.get("alg", allowed[0])
        if alg not in allowed:
            raise AlgMismatch(f"alg {alg!r} does not fit the key pinned for {keyid!r} ({', '.join(allowed)})")

        at = _utc(now if now is not None else self._clock())
        created = datetime.fromtimestamp(created_ts, timezone.utc)
        expires = datetime.fromtimestamp(expires_ts, timezone.utc)
        if created > at + self._skew:
            raise CreatedInFuture(f"created {created.isoformat()} is ahead of {at.isoformat()}")
        if expires <= at:
            raise Expired(f"expired at {expires.isoformat()}")
        if created + self._max_age < at:
            raise Expired(f"created {created.isoformat()} is older than {self._max_age}")
        if expires <= created:
            raise MalformedSignature("expires is not after created")

        base = _signature_base(msg, components, _signature_params(components, params))
        if self._executor is None:
            good = _verify_bytes(str(alg), key, signature, base)
        else:
            good = await asyncio.get_running_loop().run_in_executor(self._executor, _verify_bytes, str(alg), key,
                                                                    signature, base)
            if good and expires <= _utc(self._clock()):  # it waited for a thread: still inside its window?
                raise Expired(f"expired at {expires.isoformat()} while waiting to be verified")
        if not good:
            raise BadSignature(f"signature does not verify with the key pinned for {keyid!r}")

        # After the signature: the covered Content-Digest is authentic, so a mismatch means the body changed.
        check_content_digest(msg.field("content-digest") or "", body)

        # Last, so forged or broken messages cannot fill the store or burn a legitimate sender's nonce.
        # Kept while the signature could still pass the window here, plus the skew other processes' clocks may have.
        keep_until = min(expires, created + self._max_age) + self._skew
        if await self._nonces.seen_or_add(nonce, keyid=keyid, expires_at=keep_until):
            raise ReplayedNonce(f"nonce {nonce!r} of {keyid!r} was already used")
        return Verified(keyid=keyid, alg=str(alg), created=created, expires=expires, nonce=nonce, covered=covered)
