"""RFC 9421 signatures on wire envelopes: interoperability with two other implementations, every refusal."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import http_message_signatures as hms
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.pipeline.ports import WireRequest, WireResponse
from security.httpsig import (
    HttpSigner,
    HttpVerifier,
    MemoryNonceStore,
    SignatureError,
    content_digest,
)
from security.keys import KeyStore
from tests.security import rfc9421

T = datetime(2026, 11, 28, 3, 0, tzinfo=timezone.utc)
TS = int(T.timestamp())
URI = "https://mio-almaty.example.kz:8443/api/v2/referrals"
BODY = orjson.dumps({
    "message_id": "0b8f3c2e-5d1a-4c3b-9e2f-7a6d5c4b3a21",
    "type": "referral.requested",
    "occurred_at": "2026-11-28T08:55:00+05:00",
    "case_id": "PRB-2026-000123",
    "iin": "900101300123",
    "referral": {"kind": "housing.social", "domain": "housing", "risk_id": "R-77", "priority": "high",
                 "note": "Освобождён 2026-11-20, нуждается во временном жилье"},
    "region": "KZ-ALA",
})
REQUEST = WireRequest("POST", "/api/v2/referrals",
                      (("Content-Type", "application/json"), ("x-message-id", "0b8f3c2e")), BODY)
RESPONSE = WireResponse(202, (("content-type", "application/json"),), b'{"accepted":true,"ref":"MIO-1"}')


def _keys() -> dict[str, object]:
    return {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ecdsa-p256-sha256": ec.generate_private_key(ec.SECP256R1()),
        "rsa-pss-sha512": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


KEYS = _keys()
ALGS = list(KEYS)
OTHER = ed25519.Ed25519PrivateKey.generate()  # another party's perfectly valid key


def _signer(alg: str = "ed25519", keyid: str = "gw-1", key: object | None = None) -> HttpSigner:
    return HttpSigner(keyid=keyid, private_key=key or KEYS[alg], clock=lambda: T)  # type: ignore[arg-type]


def _verifier(pinned: dict[str, object] | None = None, nonces: MemoryNonceStore | None = None,
              now: datetime = T) -> HttpVerifier:
    keys = pinned if pinned is not None else {"gw-1": KEYS["ed25519"].public_key()}  # type: ignore[attr-defined]
    return HttpVerifier(resolve_key=keys.get, nonces=nonces if nonces is not None else MemoryNonceStore(clock=lambda: now),  # type: ignore[arg-type]
                        clock=lambda: now)


def _msg(wire: WireRequest, uri: str = URI) -> rfc9421.Msg:
    return rfc9421.Msg(list(wire.headers), wire.body, method=wire.method, uri=uri)


def _wire(headers: list[tuple[str, str]], body: bytes = BODY) -> WireRequest:
    return WireRequest("POST", "/api/v2/referrals", tuple(headers), body)


def _independent_sign(alg: str = "ed25519", *, key: object | None = None, keyid: str = "gw-1",
                      body: bytes = BODY, **kw) -> WireRequest:
    options = dict(components=["@method", "@target-uri", "content-digest", "content-type"], created=TS,
                   expires=TS + 300, nonce="n-" + base64.b32encode(bytes(8)).decode())
    options.update(kw)
    headers = rfc9421.sign(rfc9421.Msg([("Content-Type", "application/json")], body, method="POST", uri=URI),
                           key=key or KEYS[alg], alg=alg, keyid=keyid, **options)
    return _wire(headers, body)


def _nonce(wire: WireRequest) -> object:
    (_, params), = rfc9421.parse_dictionary(wire.header("signature-input") or "").values()
    return params["nonce"]


async def _reason(verifier: HttpVerifier, request: WireRequest, uri: str = URI) -> str:
    with pytest.raises(SignatureError) as caught:
        await verifier.verify_request(request, target_uri=uri)
    return caught.value.reason


# ---- the independent implementation is itself right ------------------------------------------------


def test_independent_verifier_checks_the_rfc_9421_b26_example() -> None:
    public = serialization.load_pem_public_key(
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n"
        b"-----END PUBLIC KEY-----\n")
    msg = rfc9421.Msg(
        [("Host", "example.com"), ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"), ("Content-Type", "application/json"),
         ("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvR"
                            "wEmTHWXvJwew==:"),
         ("Content-Length", "18"),
         ("Signature-Input", 'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
                             ';created=1618884473;keyid="test-key-ed25519"'),
         ("Signature", "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPp"
                       "BKRCw==:")],
        b'{"hello": "world"}', method="POST", uri="https://example.com/foo?param=Value&Pet=dog")
    verified = rfc9421.verify(msg, keys={"test-key-ed25519": ("ed25519", public)}, now=1618884473)
    assert verified.base.decode().splitlines()[2] == '"@path": /foo'
    # The RFC 9530 example digest of the same body, checked by the independent digest code.
    assert rfc9421.digest_matches(msg.field("content-digest") or "", msg.body)
    with pytest.raises(rfc9421.RfcError):
        rfc9421.verify(rfc9421.Msg(msg.headers, msg.body, method="PUT", uri=msg.uri),
                       keys={"test-key-ed25519": ("ed25519", public)}, now=1618884473)


# ---- interoperability with the http-message-signatures package, both directions ------------------------
# The package checks created/expires against the real clock, so these tests sign at the real time.

PKG_ALGS = {"ed25519": hms.algorithms.ED25519, "ecdsa-p256-sha256": hms.algorithms.ECDSA_P256_SHA256,
            "rsa-pss-sha512": hms.algorithms.RSA_PSS_SHA512}


@dataclass
class PkgRequest:
    method: str
    url: str
    headers: dict[str, str]


@dataclass
class PkgResponse:
    status_code: int
    headers: dict[str, str]
    request: PkgRequest


def _pkg_verifier(alg: str, keyid: str, public: object) -> hms.HTTPMessageVerifier:
    return hms.HTTPMessageVerifier(signature_algorithm=PKG_ALGS[alg],
                                   key_resolver=hms.MappingKeyResolver(public_keys={keyid: public}, private_keys={}))


def _pkg_signer(alg: str, keyid: str, private: object) -> hms.HTTPMessageSigner:
    return hms.HTTPMessageSigner(signature_algorithm=PKG_ALGS[alg],
                                 key_resolver=hms.MappingKeyResolver(public_keys={}, private_keys={keyid: private}))


def _real_verifier(pinned: dict[str, object]) -> HttpVerifier:
    return HttpVerifier(resolve_key=pinned.get, nonces=MemoryNonceStore())  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGS)
async def test_gateway_signs_request_package_verifies(alg: str) -> None:
    signed = HttpSigner(keyid="gw-1", private_key=KEYS[alg]).sign_request(REQUEST, target_uri=URI)  # type: ignore[arg-type]
    message = PkgRequest("POST", URI, dict(signed.headers))
    [result] = _pkg_verifier(alg, "gw-1", KEYS[alg].public_key()).verify(  # type: ignore[attr-defined]
        message, max_age=timedelta(seconds=300), body=signed.body,
        require_components=("@method", "@target-uri", "content-digest", "content-type"))
    assert result.parameters["keyid"] == "gw-1" and result.parameters["alg"] == alg
    assert result.body == BODY and result.nonce == _nonce(signed)
    # Tampering is caught by the package too, so the agreement above is not vacuous.
    with pytest.raises(hms.InvalidSignature):
        _pkg_verifier(alg, "gw-1", KEYS[alg].public_key()).verify(  # type: ignore[attr-defined]
            PkgRequest("PUT", URI, dict(signed.headers)), body=signed.body)
    with pytest.raises(hms.InvalidSignature):
        _pkg_verifier(alg, "gw-1", KEYS[alg].public_key()).verify(message, body=signed.body + b"x")  # type: ignore[attr-defined]


@pytest.mark.parametrize("alg", ALGS)
async def test_package_signs_request_gateway_verifies(alg: str) -> None:
    now = datetime.now(timezone.utc)
    message = PkgRequest("POST", URI, {"Content-Type": "application/json", "x-message-id": "0b8f3c2e"})
    _pkg_signer(alg, "mio-almaty", KEYS[alg]).sign(
        message, key_id="mio-almaty", created=now, expires=now + timedelta(seconds=120), nonce="pkg-nonce-1",
        label="mio", covered_component_ids=("@method", "@target-uri", "content-digest", "content-type"), body=BODY)
    wire = WireRequest("POST", "/api/v2/referrals", tuple(message.headers.items()), BODY)
    verified = await _real_verifier({"mio-almaty": KEYS[alg].public_key()}).verify_request(wire, target_uri=URI)  # type: ignore[attr-defined]
    assert (verified.keyid, verified.alg, verified.nonce) == ("mio-almaty", alg, "pkg-nonce-1")
    tampered = WireRequest("POST", "/api/v2/referrals", wire.headers, BODY.replace(b"high", b"low!"))
    assert await _reason(_real_verifier({"mio-almaty": KEYS[alg].public_key()}), tampered) == "bad-digest"  # type: ignore[attr-defined]


async def test_gateway_signed_response_bound_to_request_package_verifies() -> None:
    signer = HttpSigner(keyid="gw-1", private_key=KEYS["ed25519"])  # type: ignore[arg-type]
    request = signer.sign_request(REQUEST, target_uri=URI)
    response = signer.sign_response(RESPONSE, request=request, target_uri=URI)
    message = PkgResponse(202, dict(response.headers), PkgRequest("POST", URI, dict(request.headers)))
    [result] = _pkg_verifier("ed25519", "gw-1", KEYS["ed25519"].public_key()).verify(  # type: ignore[attr-defined]
        message, body=response.body, require_components=("@status", '"@method";req', '"@target-uri";req'))
    assert result.covered_components['"@target-uri";req'] == URI


async def test_package_signed_response_gateway_verifies_with_binding() -> None:
    now = datetime.now(timezone.utc)
    request = HttpSigner(keyid="gw-1", private_key=KEYS["ed25519"]).sign_request(REQUEST, target_uri=URI)  # type: ignore[arg-type]
    message = PkgResponse(202, dict(RESPONSE.headers), PkgRequest("POST", URI, dict(request.headers)))
    _pkg_signer("ecdsa-p256-sha256", "mio", KEYS["ecdsa-p256-sha256"]).sign(
        message, key_id="mio", created=now, expires=now + timedelta(seconds=60), nonce="r-1", body=RESPONSE.body,
        covered_component_ids=("@status", "content-digest", "content-type", '"@method";req', '"@target-uri";req'))
    wire = WireResponse(202, tuple(message.headers.items()), RESPONSE.body)
    pinned = {"mio": KEYS["ecdsa-p256-sha256"].public_key()}  # type: ignore[attr-defined]
    assert (await _real_verifier(pinned).verify_response(wire, request=request, target_uri=URI)).nonce == "r-1"
    with pytest.raises(SignatureError) as caught:
        await _real_verifier(pinned).verify_response(wire, request=request, target_uri=URI + "/x")
    assert caught.value.reason == "bad-signature"


# ---- interoperability with tests/security/rfc9421.py, both directions -----------------------------------


@pytest.mark.parametrize("alg", ALGS)
async def test_gateway_signs_request_independent_verifies(alg: str) -> None:
    signed = _signer(alg).sign_request(REQUEST, target_uri=URI)
    assert signed.body == REQUEST.body and signed.header("x-message-id") == "0b8f3c2e"
    assert signed.header("content-digest") == rfc9421.digest_field(BODY)
    result = rfc9421.verify(_msg(signed), keys={"gw-1": (alg, KEYS[alg].public_key())}, now=TS,  # type: ignore[attr-defined]
                            require=('"@method"', '"@target-uri"', '"content-digest"', '"content-type"'))
    assert result.params["keyid"] == "gw-1" and result.params["alg"] == alg
    assert result.params["created"] == TS and result.params["expires"] == TS + 300
    assert isinstance(result.params["nonce"], str) and len(result.params["nonce"]) >= 16
    # And the gateway's own verifier agrees.
    verified = await _verifier({"gw-1": KEYS[alg].public_key()}).verify_request(signed, target_uri=URI)  # type: ignore[attr-defined]
    assert (verified.keyid, verified.alg, verified.created) == ("gw-1", alg, T)


@pytest.mark.parametrize("alg", ALGS)
async def test_independent_signs_request_gateway_verifies(alg: str) -> None:
    request = _independent_sign(alg, keyid="mio-almaty")
    verified = await _verifier({"mio-almaty": KEYS[alg].public_key()}).verify_request(request, target_uri=URI)  # type: ignore[attr-defined]
    assert verified.keyid == "mio-almaty" and verified.alg == alg
    assert verified.covered == ('"@method"', '"@target-uri"', '"content-digest"', '"content-type"')


async def test_gateway_signs_response_bound_to_its_request_independent_verifies() -> None:
    request = _signer().sign_request(REQUEST, target_uri=URI)
    response = _signer().sign_response(RESPONSE, request=request, target_uri=URI)
    msg = rfc9421.Msg(list(response.headers), response.body, status=202, request=_msg(request))
    result = rfc9421.verify(msg, keys={"gw-1": ("ed25519", KEYS["ed25519"].public_key())}, now=TS,  # type: ignore[attr-defined]
                            require=('"@status"', '"content-digest"', '"@method";req', '"@target-uri";req'))
    assert result.base.decode().startswith('"@status": 202\n')
    # The same response presented as the answer to another URI does not verify.
    other = rfc9421.Msg(msg.headers, msg.body, status=202, request=_msg(request, URI + "/other"))
    with pytest.raises(rfc9421.RfcError, match="does not verify"):
        rfc9421.verify(other, keys={"gw-1": ("ed25519", KEYS["ed25519"].public_key())}, now=TS)  # type: ignore[attr-defined]


async def test_independent_signs_response_gateway_verifies_and_binding_holds() -> None:
    key = KEYS["ecdsa-p256-sha256"]
    request = _signer().sign_request(REQUEST, target_uri=URI)
    headers = rfc9421.sign(
        rfc9421.Msg(list(RESPONSE.headers), RESPONSE.body, status=202, request=_msg(request)),
        key=key, alg="ecdsa-p256-sha256", keyid="mio", created=TS, expires=TS + 60, nonce="resp-1",
        components=["@status", "content-digest", "content-type", '"@method";req', '"@target-uri";req'])
    response = WireResponse(202, tuple(headers), RESPONSE.body)
    verifier = _verifier({"mio": key.public_key()})  # type: ignore[attr-defined]
    verified = await verifier.verify_response(response, request=request, target_uri=URI)
    assert verified.keyid == "mio" and '"@target-uri";req' in verified.covered
    with pytest.raises(SignatureError) as caught:  # swapped onto another exchange
        await _verifier({"mio": key.public_key()}).verify_response(  # type: ignore[attr-defined]
            response, request=request, target_uri=URI + "?x=1")
    assert caught.value.reason == "bad-signature"


async def test_sha512_content_digest_is_accepted() -> None:
    headers = rfc9421.sign(
        rfc9421.Msg([("Content-Type", "application/json"), ("Content-Digest", rfc9421.digest_field(BODY, "sha-512"))],
                    BODY, method="POST", uri=URI),
        key=KEYS["ed25519"], alg="ed25519", keyid="gw-1", created=TS, expires=TS + 300, nonce="n512",
        components=["@method", "@target-uri", "content-digest", "content-type"])
    verified = await _verifier().verify_request(_wire(headers), target_uri=URI)
    assert verified.nonce == "n512"
    assert content_digest(BODY, algorithm="sha-512") == rfc9421.digest_field(BODY, "sha-512")


async def test_keys_from_the_key_store_sign_and_verify_across_rotation(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys", passphrase="pw", clock=lambda: T)
    store.generate()
    old = store.active()
    signed_before = HttpSigner(keyid=old.kid, private_key=old.private_key, clock=lambda: T).sign_request(
        REQUEST, target_uri=URI)
    store.rotate(overlap=timedelta(minutes=10), now=T + timedelta(seconds=1))
    new = store.active()
    assert new.kid != old.kid

    def verifier(now: datetime) -> HttpVerifier:
        return HttpVerifier(resolve_key=lambda kid: store.public_key(kid, now=now), nonces=MemoryNonceStore(),
                            clock=lambda: now)

    in_overlap = T + timedelta(seconds=30)
    assert (await verifier(in_overlap).verify_request(signed_before, target_uri=URI)).keyid == old.kid
    signed_after = HttpSigner(keyid=new.kid, private_key=new.private_key, clock=lambda: in_overlap).sign_request(
        REQUEST, target_uri=URI)
    assert (await verifier(in_overlap).verify_request(signed_after, target_uri=URI)).keyid == new.kid
    # After the overlap the old key is gone (checked with a long max age so only the key decides).
    late = T + timedelta(minutes=11)
    long_lived = HttpVerifier(resolve_key=lambda kid: store.public_key(kid, now=late), nonces=MemoryNonceStore(),
                              clock=lambda: T + timedelta(seconds=31))
    assert await _reason(long_lived, signed_before) == "unknown-key"


# ---- one test per refusal --------------------------------------------------------------------------------


async def test_missing_signature() -> None:
    assert await _reason(_verifier(), REQUEST) == "missing-signature"


async def test_body_changed_under_a_valid_signature_is_bad_digest() -> None:
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    tampered = WireRequest(signed.method, signed.path, signed.headers, BODY.replace(b"high", b"low!"))
    assert len(tampered.body) == len(BODY) and tampered.body != BODY
    assert await _reason(_verifier(), tampered) == "bad-digest"


async def test_missing_content_digest_is_missing_component() -> None:
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    stripped = WireRequest(signed.method, signed.path,
                           tuple(h for h in signed.headers if h[0].lower() != "content-digest"), signed.body)
    assert await _reason(_verifier(), stripped) == "missing-component"
    # A signature that never covered a digest is refused the same way, though it verifies cryptographically.
    uncovered = _independent_sign(components=["@method", "@target-uri", "content-type"], add_digest=False)
    assert await _reason(_verifier(), uncovered) == "missing-component"


async def test_created_in_the_future() -> None:
    ahead = _independent_sign(created=TS + 61, expires=TS + 361)
    assert await _reason(_verifier(), ahead) == "created-in-future"
    # Within the 60 s a counterpart's clock may run ahead, it passes.
    slightly_ahead = _independent_sign(created=TS + 59, expires=TS + 359)
    assert (await _verifier().verify_request(slightly_ahead, target_uri=URI)).created == T + timedelta(seconds=59)


async def test_expired_and_too_old() -> None:
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    assert await _reason(_verifier(now=T + timedelta(seconds=300)), signed) == "expired"
    long_expiry = _independent_sign(expires=TS + 86_400)
    assert await _reason(_verifier(now=T + timedelta(seconds=301)), long_expiry) == "expired"  # max age 300 s


async def test_replayed_nonce_is_refused_across_verifiers_sharing_a_store() -> None:
    nonces = MemoryNonceStore(clock=lambda: T)
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    await _verifier(nonces=nonces).verify_request(signed, target_uri=URI)
    # A second gateway process with the same shared store sees the replay.
    assert await _reason(_verifier(nonces=nonces), signed) == "replayed-nonce"
    # A fresh signature of the same request has its own nonce and passes.
    again = _signer().sign_request(REQUEST, target_uri=URI)
    assert (await _verifier(nonces=nonces).verify_request(again, target_uri=URI)).nonce == _nonce(again) != _nonce(signed)


async def test_forged_message_does_not_burn_the_nonce() -> None:
    nonces = MemoryNonceStore(clock=lambda: T)
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    forged = WireRequest(signed.method, signed.path, signed.headers, signed.body + b" ")
    assert await _reason(_verifier(nonces=nonces), forged) == "bad-digest"
    assert (await _verifier(nonces=nonces).verify_request(signed, target_uri=URI)).keyid == "gw-1"


async def test_another_partys_valid_key() -> None:
    # Under its own keyid: nothing is pinned for it here.
    theirs = _signer(keyid="mtszn-1", key=OTHER).sign_request(REQUEST, target_uri=URI)
    assert await _reason(_verifier(), theirs) == "unknown-key"
    # Claiming our pinned keyid: the pinned key does not verify it.
    impostor = _signer(keyid="gw-1", key=OTHER).sign_request(REQUEST, target_uri=URI)
    assert await _reason(_verifier(), impostor) == "bad-signature"


async def test_signature_for_another_target_uri_is_bad_signature() -> None:
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    assert await _reason(_verifier(), signed, URI.replace("almaty", "astana")) == "bad-signature"


async def test_alg_confusion_hmac_with_the_ed25519_public_key_as_secret() -> None:
    public = KEYS["ed25519"].public_key()  # type: ignore[attr-defined]
    secret = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    forged = _independent_sign("hmac-sha256", key=secret)
    assert await _reason(_verifier({"gw-1": public}), forged) == "alg-mismatch"


async def test_alg_confusion_rsa_header_with_an_ed25519_pinned_key() -> None:
    forged = _independent_sign("rsa-pss-sha512")  # a real RSA signature, under the Ed25519 key's keyid
    assert await _reason(_verifier(), forged) == "alg-mismatch"


async def test_missing_nonce_is_missing_parameter() -> None:
    without = _independent_sign(nonce=None)
    assert await _reason(_verifier(), without) == "missing-parameter"


async def test_garbage_signature_fields_are_malformed() -> None:
    garbage = _wire([("Content-Type", "application/json"), ("Content-Digest", content_digest(BODY)),
                     ("Signature-Input", "sig1=(((("), ("Signature", "sig1=:AAAA:")])
    assert await _reason(_verifier(), garbage) == "malformed-signature"
    two = _independent_sign()
    doubled = _wire(list(two.headers) + [("Signature-Input", 'x=("@method");created=1'), ("Signature", "x=:AAAA:")])
    assert await _reason(_verifier(), doubled) == "malformed-signature"


async def test_resigning_replaces_the_previous_signature() -> None:
    first = _signer().sign_request(REQUEST, target_uri=URI)
    second = _signer().sign_request(first, target_uri=URI)
    assert sum(1 for k, _ in second.headers if k.lower() == "signature") == 1
    assert sum(1 for k, _ in second.headers if k.lower() == "content-digest") == 1
    assert (await _verifier().verify_request(second, target_uri=URI)).nonce == _nonce(second) != _nonce(first)


async def test_body_present_but_content_type_not_covered_is_missing_component() -> None:
    uncovered = _independent_sign(components=["@method", "@target-uri", "content-digest"])
    assert await _reason(_verifier(), uncovered) == "missing-component"


async def test_unknown_signature_parameter_is_malformed() -> None:
    signed = _signer().sign_request(REQUEST, target_uri=URI)
    headers = [(k, v + ';extra="1"' if k == "Signature-Input" else v) for k, v in signed.headers]
    assert await _reason(_verifier(), _wire(headers)) == "malformed-signature"


# ---- shapes the gateway meets --------------------------------------------------------------------------


async def test_bodiless_request_signs_and_verifies_without_content_type() -> None:
    get = WireRequest("GET", "/api/v2/referrals/MIO-1", (("Accept", "application/json"),), b"")
    signed = _signer().sign_request(get, target_uri=URI + "/MIO-1")
    assert signed.header("content-digest") == content_digest(b"")
    verified = await _verifier().verify_request(signed, target_uri=URI + "/MIO-1")
    assert verified.covered == ('"@method"', '"@target-uri"', '"content-digest"')
    result = rfc9421.verify(_msg(signed, URI + "/MIO-1"),
                            keys={"gw-1": ("ed25519", KEYS["ed25519"].public_key())}, now=TS)  # type: ignore[attr-defined]
    assert result.params["keyid"] == "gw-1"


async def test_inbound_callback_as_an_asgi_server_sees_it() -> None:
    # Servers lowercase field names and may hand over the method as sent; the signature still holds.
    signed = _independent_sign("ecdsa-p256-sha256", keyid="mio-almaty")
    headers = [(k.lower(), v) for k, v in signed.headers]
    verifier = _verifier({"mio-almaty": KEYS["ecdsa-p256-sha256"].public_key()})  # type: ignore[attr-defined]
    verified = await verifier.verify_inbound(method="POST", target_uri=URI, headers=headers, body=signed.body)
    assert verified.keyid == "mio-almaty" and verified.alg == "ecdsa-p256-sha256"


async def test_rsa_pkcs1_alg_is_accepted_for_a_pinned_rsa_key_and_alg_may_be_omitted() -> None:
    rsa_key = KEYS["rsa-pss-sha512"]
    pinned = {"x": rsa_key.public_key()}  # type: ignore[attr-defined]
    v15 = _independent_sign("rsa-v1_5-sha256", key=rsa_key, keyid="x")
    assert (await _verifier(pinned).verify_request(v15, target_uri=URI)).alg == "rsa-v1_5-sha256"
    # Without alg the pinned key's default (rsa-pss-sha512) is used.
    no_alg = _independent_sign("rsa-pss-sha512", key=rsa_key, keyid="x", include_alg=False, nonce="other")
    assert (await _verifier(pinned).verify_request(no_alg, target_uri=URI)).alg == "rsa-pss-sha512"


def test_a_line_break_in_a_covered_field_cannot_be_signed() -> None:
    injected = WireRequest("POST", "/x", (("Content-Type", 'application/json\n"@method": GET'),), BODY)
    with pytest.raises(SignatureError) as caught:
        _signer().sign_request(injected, target_uri=URI)
    assert caught.value.reason == "malformed-signature"


@pytest.mark.parametrize("value", [
    'sig1=("@method" "@target-uri" "content-digest" "content-type");created=1795833295;keyid="gw";alg="ed25519"'
    ';expires=1795833595;nonce="8J8umgZEg9_ojXxxcaqlYg"',
    'pyhms=("@status" "content-digest" "@method";req "@target-uri";req);created=1;keyid="a b";expires=-5;nonce="x"',
    "sig1=();created=1",
    'sig1=("@method");keyid="a\\"b";created=1',
    'sig1=("@method" );created=1',
    'sig1=("@method");tag=tok',
    'sig1=("@method"  "x");created=1',
    'a=("x"), b=("y")',
])
def test_fast_signature_input_reader_agrees_with_the_structured_field_parser(value: str) -> None:
    import http_sf

    from security.httpsig import _parse_signature_input

    assert _parse_signature_input(value) == http_sf.parse(value.encode(), tltype="dictionary")


async def test_nonce_store_forgets_after_expiry() -> None:
    clock = [T]
    store = MemoryNonceStore(clock=lambda: clock[0])
    assert await store.seen_or_add("n", keyid="k", expires_at=T + timedelta(seconds=10)) is False
    assert await store.seen_or_add("n", keyid="k", expires_at=T + timedelta(seconds=10)) is True
    assert await store.seen_or_add("n", keyid="other", expires_at=T + timedelta(seconds=10)) is False  # per keyid
    clock[0] = T + timedelta(seconds=10)
    assert await store.seen_or_add("n", keyid="k", expires_at=T + timedelta(seconds=20)) is False
