"""A second RFC 9421 / RFC 9530 implementation, written from the RFCs, to check the gateway's one against."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

# This module deliberately shares nothing with security/httpsig.py or the http-message-signatures
# package: its own structured-field parser and serializer (RFC 8941, the subset RFC 9421 uses), its
# own signature base, its own digests.


class RfcError(Exception):
    pass


# ---- RFC 8941 subset --------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*")
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_INT = re.compile(r"-?[0-9]{1,15}")


@dataclass(frozen=True)
class Token:
    value: str


class _Parser:
    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def key(self) -> str:
        m = _KEY.match(self.s, self.i)
        if not m:
            raise RfcError(f"bad key at {self.i}")
        self.i = m.end()
        return m.group()

    def bare(self) -> object:
        c = self.peek()
        if c == '"':
            out, self.i = [], self.i + 1
            while True:
                c = self.peek()
                if c == "":
                    raise RfcError("unterminated string")
                self.i += 1
                if c == "\\":
                    out.append(self.s[self.i])
                    self.i += 1
                elif c == '"':
                    return "".join(out)
                else:
                    out.append(c)
        if c == ":":
            end = self.s.index(":", self.i + 1)
            raw = self.s[self.i + 1:end]
            self.i = end + 1
            return base64.b64decode(raw, validate=True)
        if c == "?":
            self.i += 2
            return self.s[self.i - 1] == "1"
        m = _INT.match(self.s, self.i)
        if m:
            self.i = m.end()
            return int(m.group())
        m = _TOKEN.match(self.s, self.i)
        if m:
            self.i = m.end()
            return Token(m.group())
        raise RfcError(f"bad item at {self.i}")

    def params(self) -> dict[str, object]:
        out: dict[str, object] = {}
        while self.peek() == ";":
            self.i += 1
            self.ws()
            k = self.key()
            if self.peek() == "=":
                self.i += 1
                out[k] = self.bare()
            else:
                out[k] = True
        return out

    def member(self) -> tuple[object, dict[str, object]]:
        if self.peek() == "(":
            self.i += 1
            items = []
            while True:
                self.ws()
                if self.peek() == ")":
                    self.i += 1
                    break
                value = self.bare()
                items.append((value, self.params()))
            return items, self.params()
        value = self.bare()
        return value, self.params()

    def dictionary(self) -> dict[str, tuple[object, dict[str, object]]]:
        out = {}
        self.ws()
        while self.i < len(self.s):
            k = self.key()
            if self.peek() == "=":
                self.i += 1
                out[k] = self.member()
            else:
                out[k] = (True, self.params())
            self.ws()
            if self.i < len(self.s):
                if self.peek() != ",":
                    raise RfcError(f"expected ',' at {self.i}")
                self.i += 1
                self.ws()
        return out


def parse_dictionary(text: str) -> dict[str, tuple[object, dict[str, object]]]:
    return _Parser(text).dictionary()


def ser_bare(value: object) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    if isinstance(value, Token):
        return value.value
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise RfcError(f"cannot serialize {value!r}")


def ser_params(params: dict[str, object]) -> str:
    return "".join(f";{k}" if v is True else f";{k}={ser_bare(v)}" for k, v in params.items())


def ser_inner_list(items: list[tuple[object, dict[str, object]]], params: dict[str, object]) -> str:
    return "(" + " ".join(ser_bare(v) + ser_params(p) for v, p in items) + ")" + ser_params(params)


# ---- messages and the signature base (RFC 9421 sections 2 and 2.5) -----------------------------------


@dataclass
class Msg:
    """A request (method, uri) or a response (status, and the request it answers for `req`)."""

    headers: list[tuple[str, str]]
    body: bytes = b""
    method: str | None = None
    uri: str | None = None
    status: int | None = None
    request: Msg | None = None

    def field(self, name: str) -> str | None:
        values = [v.strip(" \t") for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


def _derived(msg: Msg, name: str) -> str:
    if name == "@status":
        return str(msg.status)
    assert msg.uri is not None and msg.method is not None
    parts = urlsplit(msg.uri)
    if name == "@method":
        return msg.method.upper()
    if name == "@target-uri":
        return msg.uri
    if name == "@authority":
        host = (parts.hostname or "").lower()
        default = {"http": 80, "https": 443}.get(parts.scheme)
        return host if parts.port in (None, default) else f"{host}:{parts.port}"
    if name == "@path":
        return parts.path or "/"
    if name == "@scheme":
        return parts.scheme.lower()
    raise RfcError(f"derived component {name} not implemented here")


def component_value(msg: Msg, name: str, params: dict[str, object]) -> str:
    if params.get("req"):
        if msg.request is None:
            raise RfcError(f"{name};req needs the request")
        msg = msg.request
    if name.startswith("@"):
        return _derived(msg, name)
    value = msg.field(name)
    if value is None:
        raise RfcError(f"field {name} absent")
    return value


def signature_base(msg: Msg, items: list[tuple[object, dict[str, object]]], params: dict[str, object]) -> bytes:
    lines = []
    for name, p in items:
        assert isinstance(name, str)
        lines.append(f"{ser_bare(name)}{ser_params(p)}: {component_value(msg, name, p)}")
    lines.append(f'"@signature-params": {ser_inner_list(items, params)}')
    return "\n".join(lines).encode("ascii")


# ---- algorithms (RFC 9421 section 3.3) --------------------------------------------------------------------


def _sign(alg: str, key: object, base: bytes) -> bytes:
    if alg == "ed25519":
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(base)
    if alg == "ecdsa-p256-sha256":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(base, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # 3.3.4: r || s, not DER
    if alg == "rsa-pss-sha512":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(base, padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512())
    if alg == "rsa-v1_5-sha256":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(base, padding.PKCS1v15(), hashes.SHA256())
    if alg == "hmac-sha256":
        assert isinstance(key, bytes)
        h = hmac.HMAC(key, hashes.SHA256())
        h.update(base)
        return h.finalize()
    raise RfcError(f"alg {alg}")


def _verify(alg: str, key: object, base: bytes, sig: bytes) -> bool:
    try:
        if alg == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, base)
        elif alg == "ecdsa-p256-sha256" and isinstance(key, ec.EllipticCurvePublicKey) and len(sig) == 64:
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, base, ec.ECDSA(hashes.SHA256()))
        elif alg == "rsa-pss-sha512" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, base, padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512())
        elif alg == "rsa-v1_5-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, base, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


# ---- RFC 9530 -----------------------------------------------------------------------------------------

_HASHES = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def digest_field(body: bytes, algorithm: str = "sha-256") -> str:
    return f"{algorithm}=:{base64.b64encode(_HASHES[algorithm](body).digest()).decode()}:"


def digest_matches(field: str, body: bytes) -> bool:
    members = parse_dictionary(field)
    known = {k: v for k, (v, _) in members.items() if k in _HASHES}
    return bool(known) and all(v == _HASHES[k](body).digest() for k, v in known.items())


# ---- sign and verify -------------------------------------------------------------------------------------


def sign(msg: Msg, *, key: object, alg: str, keyid: str, components: list[str], created: int,
         expires: int | None = None, nonce: str | None = None, label: str = "ind",
         include_alg: bool = True, add_digest: bool = True) -> list[tuple[str, str]]:
    """The message's headers plus Content-Digest, Signature-Input and Signature."""
    headers = list(msg.headers)
    if add_digest and not any(k.lower() == "content-digest" for k, _ in headers):
        headers.append(("Content-Digest", digest_field(msg.body)))
    msg = Msg(headers, msg.body, msg.method, msg.uri, msg.status, msg.request)
    items: list[tuple[object, dict[str, object]]] = []
    for c in components:
        name, _, flag = c.partition(";")
        items.append((name.strip('"'), {flag: True} if flag else {}))
    params: dict[str, object] = {"created": created}
    if expires is not None:
        params["expires"] = expires
    if nonce is not None:
        params["nonce"] = nonce
    params["keyid"] = keyid
    if include_alg:
        params["alg"] = alg
    base = signature_base(msg, items, params)
    sig = _sign(alg, key, base)
    return headers + [
        ("Signature-Input", f"{label}={ser_inner_list(items, params)}"),
        ("Signature", f"{label}={ser_bare(sig)}"),
    ]


@dataclass(frozen=True)
class RfcVerified:
    label: str
    params: dict[str, object]
    covered: tuple[str, ...]
    base: bytes


def verify(msg: Msg, *, keys: dict[str, tuple[str, object]], now: int,
           require: tuple[str, ...] = ()) -> RfcVerified:
    """Every signature must verify with the key pinned for its keyid (keyid -> (alg, key))."""
    inputs = parse_dictionary(msg.field("signature-input") or "")
    sigs = parse_dictionary(msg.field("signature") or "")
    if not inputs or set(inputs) != set(sigs):
        raise RfcError("no signature, or labels differ")
    result = None
    for label, (items, params) in inputs.items():
        assert isinstance(items, list)
        keyid = params.get("keyid")
        if keyid not in keys:
            raise RfcError(f"unknown keyid {keyid!r}")
        alg, key = keys[str(keyid)]
        if "alg" in params and params["alg"] != alg:
            raise RfcError("alg differs from the pinned key's")
        created, expires = params.get("created"), params.get("expires")
        if not isinstance(created, int) or created > now + 60:
            raise RfcError("created missing or in the future")
        if isinstance(expires, int) and expires <= now:
            raise RfcError("expired")
        names = tuple(f'"{v}"{ser_params(p)}' for v, p in items)
        for r in require:
            if r not in names:
                raise RfcError(f"{r} not covered")
        base = signature_base(msg, items, params)
        sig = sigs[label][0]
        if not isinstance(sig, bytes) or not _verify(alg, key, base, sig):
            raise RfcError("signature does not verify")
        if '"content-digest"' in names and not digest_matches(msg.field("content-digest") or "", msg.body):
            raise RfcError("content-digest does not match the body")
        result = RfcVerified(label, params, names, base)
    assert result is not None
    return result
