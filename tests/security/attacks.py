"""Builders of malicious requests for the adversarial HTTP suite: forged RFC 9421 signatures, hostile SOAP envelopes."""

from __future__ import annotations

import copy
import socket
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import xmlsec
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod, XMLSigner
from signxml.algorithms import SignatureConstructionMethod

from adapters.con.codec import CON_NS, build_send_message, con, payload
from gateway.pipeline.ports import WireRequest
from security.keys import DEFAULT_CERT_VALIDITY, _self_signed
from security.parties import PartyKey, ensure_party_key
from security.xmlsig import DS_NS, SOAP_NS, WSU_NS, SignxmlSigner
from tests.security import rfc9421
from tests.security.test_xmlsig import (
    C14N,
    Party,
    _add_transform,
    body_of,
    out,
    q,
    security_of,
    signature_of,
    signxml_sign,
    tree,
    without_key_info,
    wss_layout,
    xmlsec_sign,
)

REQUEST_COMPONENTS = ["@method", "@target-uri", "content-digest", "content-type"]
JSON = "application/json"


def now() -> datetime:
    return datetime.now(timezone.utc)


# ---- keys ----------------------------------------------------------------------------------------------------


def expired_party(directory: Path, name: str, *, algorithm: str = "ed25519") -> PartyKey:
    """A key pair whose self-signed certificate (the file that gets pinned) expired yesterday."""
    party = ensure_party_key(directory, name, algorithm=algorithm)  # type: ignore[arg-type]
    cert = _self_signed(party.private_key, subject_cn=name, kid=party.kid,
                        now=now() - DEFAULT_CERT_VALIDITY - timedelta(days=1), validity=DEFAULT_CERT_VALIDITY)
    party.certificate_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return PartyKey(name, party.private_key, cert, directory)


def impostor(directory: Path, name: str, *, subject_cn: str) -> PartyKey:
    """An attacker's EC key with a certificate naming the victim: names prove nothing, only pins do."""
    party = ensure_party_key(directory, name, algorithm="ecdsa-p256")
    cert = _self_signed(party.private_key, subject_cn=subject_cn, kid=party.kid, now=now(),
                        validity=DEFAULT_CERT_VALIDITY)
    return PartyKey(name, party.private_key, cert, directory)


def xml_signer(party: PartyKey, *, at: datetime | None = None) -> SignxmlSigner:
    """The production XML signer with the party's key; `at` backdates its Timestamp."""
    clock = (lambda: at) if at is not None else now
    return SignxmlSigner(party.private_key, party.certificate, clock=clock)  # type: ignore[arg-type]


def as_party(party: PartyKey) -> Party:
    """The unit suite's Party (key and certificate), for its signxml and libxmlsec1 builders."""
    return Party(party.private_key, party.certificate)  # type: ignore[arg-type]


# ---- RFC 9421 forgeries ------------------------------------------------------------------------------------------


def signed(party: PartyKey, method: str, url: str, body: bytes, *, content_type: str | None = JSON,
           at: datetime | None = None, ttl: timedelta | None = None, nonce: str | None = None) -> list[tuple[str, str]]:
    """Headers signed by the production signer (security.httpsig.HttpSigner) with the party's key."""
    signer = party.http_signer(ttl=ttl) if ttl is not None else party.http_signer()
    headers = (("Content-Type", content_type),) if content_type else ()
    wire = signer.sign_request(WireRequest(method, urlsplit(url).path, headers, body), target_uri=url, now=at,
                               nonce=nonce)
    return list(wire.headers)


def forge(*, key: object, keyid: str, alg: str, method: str, url: str, body: bytes,
          content_type: str | None = JSON, components: list[str] | None = None, created: datetime | None = None,
          ttl: timedelta = timedelta(minutes=5), nonce: str | None = "fresh", label: str = "sig1",
          add_digest: bool = True) -> list[tuple[str, str]]:
    """Headers signed with the independent RFC 9421 implementation: an attacker's own library, any algorithm."""
    if nonce == "fresh":
        nonce = uuid.uuid4().hex
    created_ts = int((created or now()).timestamp())
    headers = [("Content-Type", content_type)] if content_type else []
    return rfc9421.sign(rfc9421.Msg(headers, body, method=method, uri=url), key=key, alg=alg, keyid=keyid,
                        components=components or REQUEST_COMPONENTS, created=created_ts,
                        expires=created_ts + int(ttl.total_seconds()), nonce=nonce, label=label,
                        add_digest=add_digest)


def without(headers: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() != name]


def replace(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [*without(headers, name), (name, value)]


def field(headers: list[tuple[str, str]], name: str) -> str:
    return next(v for k, v in headers if k.lower() == name)


# ---- ЦОН callbacks -------------------------------------------------------------------------------------------------


def con_notice(*, referral_id: str, case_ref: str, outcome: str) -> bytes:
    """An unsigned ЦОН `ReferralNotice` SendMessage, as the ЦОН simulator posts it to /v1/inbound/con."""
    notice = payload("ReferralNotice")
    for tag, value in (("referralId", referral_id), ("caseRef", case_ref), ("service", "CON_DOCUMENT_RESTORE"),
                       ("event", "COMPLETED"), ("result", "DOCUMENT_ISSUED"), ("outcome", outcome),
                       ("occurredAt", now().isoformat())):
        etree.SubElement(notice, con(tag)).text = value
    return build_send_message(message_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()),
                              service_id="CON_REFERRAL_NOTICE", message_date=now(), sender_id="CON", data=notice)


def _outcome(root: etree._Element) -> etree._Element:
    return root.find(f".//{{{CON_NS}}}outcome")


def changed_after_signing(signed: bytes, outcome: str) -> bytes:
    root = tree(signed)
    _outcome(root).text = outcome
    return out(root)


def wrapped_in_header(signed: bytes, outcome: str) -> bytes:
    """The signed Body parked in a header wrapper, an unsigned Body with the attacker's content in its place."""
    root = tree(signed)
    original = body_of(root)
    wrapper = etree.SubElement(root.find(q(SOAP_NS, "Header")), "{urn:evil}Wrapper")
    root.remove(original)
    wrapper.append(original)
    evil = copy.deepcopy(original)
    del evil.attrib[q(WSU_NS, "Id")]
    _outcome(evil).text = outcome
    root.append(evil)
    return out(root)


def second_body(signed: bytes, outcome: str) -> bytes:
    root = tree(signed)
    evil = copy.deepcopy(body_of(root))
    del evil.attrib[q(WSU_NS, "Id")]
    _outcome(evil).text = outcome
    root.insert(1, evil)
    return out(root)


def wrapped_in_signature_object(signed: bytes, outcome: str) -> bytes:
    """The signed Body hidden in a ds:Object (which signxml never checks), an unsigned one in its place."""
    root = tree(signed)
    original = body_of(root)
    obj = etree.SubElement(signature_of(root), q(DS_NS, "Object"))
    root.remove(original)
    obj.append(original)
    evil = copy.deepcopy(original)
    del evil.attrib[q(WSU_NS, "Id")]
    _outcome(evil).text = outcome
    root.append(evil)
    return out(root)


def duplicated_body_id(signed: bytes, outcome: str) -> bytes:
    """A copy of the signed Body (same Id) in a wrapper, the real Body changed: which one does a resolver pick?"""
    root = tree(signed)
    original = body_of(root)
    etree.SubElement(root.find(q(SOAP_NS, "Header")), "{urn:evil}Wrapper").append(copy.deepcopy(original))
    _outcome(original).text = outcome
    return out(root)


def duplicated_timestamp_id(signed: bytes) -> bytes:
    """The Timestamp's Id repeated under another Id attribute name on a payload element."""
    root = tree(signed)
    ts_id = security_of(root).find(q(WSU_NS, "Timestamp")).get(q(WSU_NS, "Id"))
    root.find(f".//{{{CON_NS}}}referralId").set("ID", ts_id)
    return out(root)


def second_signature(signed: bytes) -> bytes:
    root = tree(signed)
    security_of(root).append(copy.deepcopy(signature_of(root)))
    return out(root)


def foreign_signature_in_body(signed: bytes, attacker_signed: bytes) -> bytes:
    root = tree(signed)
    body_of(root)[0].append(signature_of(tree(attacker_signed)))
    return out(root)


def xslt_transform(signed: bytes) -> bytes:
    stylesheet = etree.fromstring(
        b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
        b'<xsl:template match="/"><xsl:copy-of select="document(\'file:///etc/passwd\')"/></xsl:template>'
        b'</xsl:stylesheet>')
    return _add_transform(signed, "http://www.w3.org/TR/1999/REC-xslt-19991116", stylesheet)


XPATH_WITHOUT_OUTCOME = "not(ancestor-or-self::*[local-name()='outcome'])"


def xpath_transform(signed: bytes) -> bytes:
    xpath = etree.Element(q(DS_NS, "XPath"))
    xpath.text = XPATH_WITHOUT_OUTCOME
    return _add_transform(signed, "http://www.w3.org/TR/1999/REC-xpath-19991116", xpath)


def xpath_signed_by_libxmlsec(envelope: bytes, party: PartyKey, outcome: str) -> bytes:
    """A genuine libxmlsec1 signature by the pinned key whose XPath leaves the outcome out; then the outcome changed."""
    signed = xmlsec_sign(envelope, as_party(party),
                         extra_transform=(xmlsec.constants.TransformXPath, XPATH_WITHOUT_OUTCOME))
    return changed_after_signing(signed, outcome)


def with_comments_signed_by_libxmlsec(envelope: bytes, party: PartyKey) -> bytes:
    return xmlsec_sign(envelope, as_party(party), c14n=xmlsec.constants.TransformExclC14NWithComments)


def comment_inside_signed_text(signed: bytes) -> bytes:
    """`REF-1<!--x-->23`: the signature still holds (comments are outside exc-c14n); a naive reader sees `REF-1`."""
    root = tree(signed)
    ref = root.find(f".//{{{CON_NS}}}referralId")
    value = ref.text
    ref.text = value[:5]
    ref.append(etree.Comment("injected"))
    ref[-1].tail = value[5:]
    return out(root)


def hmac_keyed_with_the_certificate(envelope: bytes, party: PartyKey) -> bytes:
    """Algorithm confusion: HMAC-SHA256 keyed with the counterpart's public certificate, which anyone has."""
    return signxml_sign(envelope, key=party.certificate_pem(), cert=None, algorithm=SignatureMethod.HMAC_SHA256)


def sha1_digest(envelope: bytes, party: PartyKey) -> bytes:
    return signxml_sign(envelope, key=party.private_key, cert=party.certificate,
                        algorithm=SignatureMethod.ECDSA_SHA256, digest=DigestAlgorithm.SHA1)


def pinned_certificate_over_attacker_signature(attacker_signed: bytes, genuine_signed: bytes) -> bytes:
    """KeyInfo is not signed: the pinned certificate pasted over a signature made with the attacker's key."""
    root = tree(attacker_signed)
    genuine = signature_of(tree(genuine_signed)).find(f".//{q(DS_NS, 'X509Certificate')}").text
    signature_of(root).find(f".//{q(DS_NS, 'X509Certificate')}").text = genuine
    return out(root)


def key_value_next_to_pinned_certificate(envelope: bytes, attacker: PartyKey, pinned: PartyKey) -> bytes:
    root, body_ref, ts_ref = wss_layout(envelope)
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, c14n_algorithm=C14N,
                       signature_algorithm=SignatureMethod.ECDSA_SHA256)
    return out(signer.sign(root, key=attacker.private_key, cert=[pinned.certificate_pem().decode()],
                           reference_uri=[body_ref, ts_ref], always_add_key_value=True))


def no_key_info(signed: bytes) -> bytes:
    return without_key_info(signed)


def network_xxe(form: str, url: str) -> bytes:
    doctype = {
        "general": f'<!DOCTYPE e [<!ENTITY x SYSTEM "{url}">]>',
        "parameter": f'<!DOCTYPE e [<!ENTITY % p SYSTEM "{url}"> %p;]>',
        "external-dtd": f'<!DOCTYPE e SYSTEM "{url}">',
    }[form]
    return (f'<?xml version="1.0"?>{doctype}<soapenv:Envelope xmlns:soapenv="{SOAP_NS}">'
            f'<soapenv:Body>{"&x;" if form == "general" else ""}</soapenv:Body></soapenv:Envelope>').encode()


# ---- a port that must never be called -------------------------------------------------------------------------------


class Canary:
    """A loopback TCP port recording every connection: network XXE must never reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x.dtd"
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
