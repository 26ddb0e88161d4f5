"""XML signatures over ЦОН SOAP envelopes: round trip, interop with python-xmlsec, and the adversarial suite."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner
from signxml.algorithms import SignatureConstructionMethod

from adapters.con.codec import CON_NS, ConAdapter, read_envelope
from gateway.canonical.messages import parse_message
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.pipeline.ports import EncodeContext
from security.xmlsig import (
    DS_NS,
    EXC_C14N,
    SOAP_NS,
    WSSE_NS,
    WSU_NS,
    SignxmlSigner,
    VerifiedEnvelope,
    XmlSignatureError,
    XmlSigner,
    fingerprint,
    verify_envelope,
)

NOW = datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)
MAPPINGS = load_mappings(ROOT / "gateway" / "mappings")
IIN = "061211600012"
CASE = parse_message({
    "message_id": "9f8fad5b-d9cb-469f-a165-70867728950e", "type": "case.registered", "case_id": "KRG-2026-000123",
    "occurred_at": "2026-03-01T09:00:00+05:00", "body": {"region": "KZ-35", "person": {
        "iin": IIN, "surname": "Өтегенова", "given_name": "Әсел", "birth_date": "2006-12-11", "sex": "female"}},
})
REFERRAL = parse_message({
    "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
    "case_id": "KRG-2026-000123", "occurred_at": "2026-03-02T09:15:00+05:00",
    "body": {"referral_id": "REF-0", "kind": "document.restore", "risk_id": "R-77",
             "details": {"document_type": "identity_card", "note": "жоғалған"}},
})
C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0


# --------------------------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Party:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def signer(self, *, at: datetime = NOW) -> SignxmlSigner:
        return SignxmlSigner(self.key, self.cert, clock=lambda: at)


def make_party(kind: str, name: str, *, not_before: datetime = NOW - timedelta(days=1),
               not_after: datetime = NOW + timedelta(days=365)) -> Party:
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return Party(key, cert)


@pytest.fixture(scope="module")
def parties() -> dict[str, Party]:
    """ЦОН's RSA and ECDSA keys, another agency's (valid, pinned for it only), an attacker's, expired, not yet valid."""
    return {
        "rsa": make_party("rsa", "con-rsa"),
        "ec": make_party("ec", "con-ec"),
        "other_agency": make_party("rsa", "mtszn"),
        "attacker": make_party("rsa", "con-rsa"),  # same subject name: names prove nothing
        "expired": make_party("rsa", "con-old", not_before=NOW - timedelta(days=400),
                              not_after=NOW - timedelta(days=1)),
        "not_yet": make_party("ec", "con-next", not_before=NOW + timedelta(days=1),
                              not_after=NOW + timedelta(days=400)),
    }


@pytest.fixture(params=["rsa", "ec"])
def con_party(request: pytest.FixtureRequest, parties: dict[str, Party]) -> Party:
    return parties[request.param]


@pytest.fixture(scope="module")
def envelope() -> bytes:
    """A real ЦОН referral request as the codec writes it."""
    wire = ConAdapter().encode(REFERRAL, mappings=MAPPINGS, instance=MAPPINGS.instance("con"),
                               context=EncodeContext(now=NOW, case=CASE))
    return wire.body


@pytest.fixture
def signed(con_party: Party, envelope: bytes) -> bytes:
    return con_party.signer().sign(envelope)


def refused(data: bytes, reason: str, *, trusted: list[x509.Certificate], now: datetime = NOW,
            **kwargs: object) -> XmlSignatureError:
    with pytest.raises(XmlSignatureError) as info:
        verify_envelope(data, trusted=trusted, now=now, **kwargs)  # type: ignore[arg-type]
    assert info.value.reason == reason, str(info.value)
    return info.value


# --------------------------------------------------------------------------------------------- helpers


def tree(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def out(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def body_of(root: etree._Element) -> etree._Element:
    return root.find(q(SOAP_NS, "Body"))


def security_of(root: etree._Element) -> etree._Element:
    return root.find(f"{q(SOAP_NS, 'Header')}/{q(WSSE_NS, 'Security')}")


def signature_of(root: etree._Element) -> etree._Element:
    return security_of(root).find(q(DS_NS, "Signature"))


def signed_text(root: etree._Element, tag: str) -> str:
    return root.find(f".//{{{CON_NS}}}{tag}").text


def without_key_info(data: bytes) -> bytes:
    root = tree(data)
    sig = signature_of(root)
    sig.remove(sig.find(q(DS_NS, "KeyInfo")))
    return out(root)


def wss_layout(envelope: bytes) -> tuple[etree._Element, str, str]:
    """The gateway's header layout, unsigned, with a signxml placeholder: for attackers and odd signers."""
    root = tree(envelope)
    header = root.find(q(SOAP_NS, "Header"))
    body = body_of(root)
    body.set(q(WSU_NS, "Id"), "Body-x")
    security = etree.SubElement(header, q(WSSE_NS, "Security"), nsmap={"wsse": WSSE_NS, "wsu": WSU_NS})
    ts = etree.SubElement(security, q(WSU_NS, "Timestamp"), {q(WSU_NS, "Id"): "TS-x"})
    etree.SubElement(ts, q(WSU_NS, "Created")).text = "2026-03-02T04:20:00.000Z"
    etree.SubElement(ts, q(WSU_NS, "Expires")).text = "2026-03-02T04:25:00.000Z"
    etree.SubElement(security, q(DS_NS, "Signature"), Id="placeholder", nsmap={"ds": DS_NS})
    return root, "#Body-x", "#TS-x"


class _AnyAlgorithmSigner(XMLSigner):
    """signxml refuses to sign with SHA-1; an attacker's copy would not."""

    def check_deprecated_methods(self) -> None:
        pass


def signxml_sign(envelope: bytes, *, key: object, cert: x509.Certificate | None,
                 algorithm: SignatureMethod = SignatureMethod.RSA_SHA256,
                 digest: DigestAlgorithm = DigestAlgorithm.SHA256,
                 c14n: CanonicalizationMethod = C14N) -> bytes:
    """Sign the same layout with signxml and free choices: how an attacker with a library would."""
    root, body_ref, ts_ref = wss_layout(envelope)
    signer = _AnyAlgorithmSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm=algorithm,
                                 digest_algorithm=digest, c14n_algorithm=c14n)
    return out(signer.sign(root, key=key, cert=[cert] if cert is not None else None,
                           reference_uri=[body_ref, ts_ref]))


def xmlsec_sign(envelope: bytes, party: Party, *, c14n: object = xmlsec.constants.TransformExclC14N,
                extra_transform: tuple[object, str | None] | None = None) -> bytes:
    """Sign the gateway's layout with python-xmlsec (libxmlsec1): the independent implementation."""
    root, body_ref, ts_ref = wss_layout(envelope)
    placeholder = signature_of(root)
    method = (xmlsec.constants.TransformRsaSha256 if isinstance(party.key, rsa.RSAPrivateKey)
              else xmlsec.constants.TransformEcdsaSha256)
    sig = xmlsec.template.create(root, c14n, method, ns="ds")
    placeholder.getparent().replace(placeholder, sig)
    for uri in (body_ref, ts_ref):
        ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha256, uri=uri)
        xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
        if extra_transform is not None:
            transform = xmlsec.template.add_transform(ref, extra_transform[0])
            if extra_transform[1] is not None:
                etree.SubElement(transform, q(DS_NS, "XPath")).text = extra_transform[1]
        else:
            xmlsec.template.add_transform(ref, c14n)
    x509_data = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(sig))
    xmlsec.template.x509_data_add_certificate(x509_data)
    ctx = xmlsec.SignatureContext()
    for el in (body_of(root), security_of(root).find(q(WSU_NS, "Timestamp"))):
        ctx.register_id(el, "Id", WSU_NS)
    key = xmlsec.Key.from_memory(party.key_pem, xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_memory(party.cert_pem, xmlsec.constants.KeyDataFormatCertPem)
    ctx.key = key
    ctx.sign(sig)
    return out(root)


def xmlsec_verify(data: bytes, cert: x509.Certificate) -> None:
    root = tree(data)
    ctx = xmlsec.SignatureContext()
    for el in root.iter():
        if el.get(q(WSU_NS, "Id")) is not None:
            ctx.register_id(el, "Id", WSU_NS)
    ctx.key = xmlsec.Key.from_memory(cert.public_bytes(serialization.Encoding.PEM),
                                     xmlsec.constants.KeyDataFormatCertPem)
    ctx.verify(signature_of(root))


# --------------------------------------------------------------------------------------------- round trip


def test_the_default_signer_is_an_xml_signer(parties: dict[str, Party]) -> None:
    signer: XmlSigner = parties["rsa"].signer()
    assert callable(signer.sign)


def test_sign_then_verify_returns_the_signed_body(con_party: Party, envelope: bytes, signed: bytes) -> None:
    verified = verify_envelope(signed, trusted=[con_party.cert], now=NOW)
    assert isinstance(verified, VerifiedEnvelope)
    assert verified.certificate == con_party.cert
    assert verified.created == NOW and verified.expires == NOW + timedelta(minutes=5)
    kind = "rsa-sha256" if isinstance(con_party.key, rsa.RSAPrivateKey) else "ecdsa-sha256"
    expected = f"http://www.w3.org/2001/04/xmldsig-more#{kind}"
    assert verified.algorithm == expected
    # the payload is the codec's SendMessage, unchanged, Kazakh letters included
    original = body_of(tree(envelope))
    assert etree.tostring(verified.payload, method="c14n", exclusive=True) == \
        etree.tostring(next(iter(original)), method="c14n", exclusive=True)
    # and the codec decodes the envelope rebuilt from the signed Body alone
    msg = read_envelope(verified.envelope(), what="test")
    assert msg.operation == "SendMessage"
    assert msg.data is not None and msg.data.findtext(f"{{{CON_NS}}}referralId") == "REF-0"


def test_the_signature_covers_body_and_timestamp_with_exc_c14n(signed: bytes) -> None:
    root = tree(signed)
    sig = signature_of(root)
    assert sig is not None and len(list(root.iter(q(DS_NS, "Signature")))) == 1
    assert sig.find(f"{q(DS_NS, 'SignedInfo')}/{q(DS_NS, 'CanonicalizationMethod')}").get("Algorithm") == EXC_C14N
    uris = [r.get("URI") for r in sig.iter(q(DS_NS, "Reference"))]
    assert uris == [f"#{body_of(root).get(q(WSU_NS, 'Id'))}",
                    f"#{security_of(root).find(q(WSU_NS, 'Timestamp')).get(q(WSU_NS, 'Id'))}"]


def test_each_signature_gets_fresh_ids(parties: dict[str, Party], envelope: bytes) -> None:
    a, b = (tree(parties["rsa"].signer().sign(envelope)) for _ in range(2))
    assert body_of(a).get(q(WSU_NS, "Id")) != body_of(b).get(q(WSU_NS, "Id"))


def test_rotation_any_pinned_certificate_verifies(parties: dict[str, Party], envelope: bytes) -> None:
    signed = parties["ec"].signer().sign(envelope)
    trusted = [parties["rsa"].cert, parties["ec"].cert]
    assert verify_envelope(signed, trusted=trusted, now=NOW).certificate == parties["ec"].cert
    # without the KeyInfo hint every pinned certificate is tried
    assert verify_envelope(without_key_info(signed), trusted=trusted, now=NOW).certificate == parties["ec"].cert


def test_signer_refuses_weak_or_mismatched_keys(parties: dict[str, Party]) -> None:
    with pytest.raises(ValueError):
        SignxmlSigner(rsa.generate_private_key(65537, 1024), parties["rsa"].cert)
    with pytest.raises(ValueError):
        SignxmlSigner(parties["rsa"].key, parties["ec"].cert)
    with pytest.raises(ValueError):
        SignxmlSigner(ec.generate_private_key(ec.SECP384R1()), parties["ec"].cert)


def test_signer_refuses_an_already_signed_envelope(signed: bytes, parties: dict[str, Party]) -> None:
    with pytest.raises(XmlSignatureError) as info:
        parties["rsa"].signer().sign(signed)
    assert info.value.reason == "bad-envelope"


# --------------------------------------------------------------------------------------------- interop


def test_xmlsec_verifies_what_the_gateway_signs(con_party: Party, signed: bytes) -> None:
    xmlsec_verify(signed, con_party.cert)


def test_xmlsec_rejects_a_gateway_signature_over_a_changed_body(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    root.find(f".//{{{CON_NS}}}referralId").text = "REF-9"
    with pytest.raises(xmlsec.Error):
        xmlsec_verify(out(root), con_party.cert)


def test_the_gateway_verifies_what_xmlsec_signs(con_party: Party, envelope: bytes) -> None:
    signed = xmlsec_sign(envelope, con_party)
    verified = verify_envelope(signed, trusted=[con_party.cert], now=NOW)
    assert verified.certificate == con_party.cert
    assert verified.payload is not None and verified.payload.tag.endswith("SendMessage")


# --------------------------------------------------------------------------------------------- adversarial


def test_unsigned_envelope(parties: dict[str, Party], envelope: bytes) -> None:
    refused(envelope, "no-signature", trusted=[parties["rsa"].cert])


def test_body_changed_after_signing(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    root.find(f".//{{{CON_NS}}}iin").text = "061211600020"
    refused(out(root), "bad-signature", trusted=[con_party.cert])


def test_timestamp_changed_after_signing(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    root.find(f".//{q(WSU_NS, 'Expires')}").text = "2027-01-01T00:00:00.000Z"
    refused(out(root), "bad-signature", trusted=[con_party.cert])


def test_wrapping_signed_body_moved_and_unsigned_body_inserted(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    original = body_of(root)
    wrapper = etree.SubElement(root.find(q(SOAP_NS, "Header")), "{urn:evil}Wrapper")
    root.remove(original)
    wrapper.append(original)
    evil = copy.deepcopy(original)
    del evil.attrib[q(WSU_NS, "Id")]
    evil.find(f".//{{{CON_NS}}}iin").text = "990101300011"
    root.append(evil)
    refused(out(root), "unexpected-reference", trusted=[con_party.cert])


def test_wrapping_a_second_body(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    evil = copy.deepcopy(body_of(root))
    del evil.attrib[q(WSU_NS, "Id")]
    root.insert(1, evil)
    refused(out(root), "bad-envelope", trusted=[con_party.cert])


def test_wrapping_in_a_signature_object(con_party: Party, signed: bytes) -> None:
    """The signed Body parked in ds:Object (unchecked by signxml) and an unsigned one in its place."""
    root = tree(signed)
    original = body_of(root)
    obj = etree.SubElement(signature_of(root), q(DS_NS, "Object"))
    root.remove(original)
    obj.append(original)
    evil = copy.deepcopy(original)
    del evil.attrib[q(WSU_NS, "Id")]
    root.append(evil)
    # the Object itself is refused: signxml never checks what it holds
    refused(out(root), "bad-signature", trusted=[con_party.cert])


def test_duplicated_body_id(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    original = body_of(root)
    keep = copy.deepcopy(original)
    etree.SubElement(root.find(q(SOAP_NS, "Header")), "{urn:evil}Wrapper").append(keep)
    original.find(f".//{{{CON_NS}}}iin").text = "990101300011"
    refused(out(root), "duplicate-id", trusted=[con_party.cert])


def test_duplicated_timestamp_id_under_another_attribute(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    ts_id = security_of(root).find(q(WSU_NS, "Timestamp")).get(q(WSU_NS, "Id"))
    root.find(f".//{{{CON_NS}}}referralId").set("ID", ts_id)
    refused(out(root), "duplicate-id", trusted=[con_party.cert])


def test_a_second_signature(con_party: Party, signed: bytes, parties: dict[str, Party], envelope: bytes) -> None:
    root = tree(signed)
    security_of(root).append(copy.deepcopy(signature_of(root)))
    refused(out(root), "multiple-signatures", trusted=[con_party.cert])
    # an attacker's own signature slipped into the Body counts too
    root = tree(signed)
    attacker = tree(parties["attacker"].signer().sign(envelope))
    body_of(root)[0].append(signature_of(attacker))
    refused(out(root), "multiple-signatures", trusted=[con_party.cert])


XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
<soapenv:Body>&x;</soapenv:Body></soapenv:Envelope>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
<soapenv:Body>&lol9;</soapenv:Body></soapenv:Envelope>"""


def test_xxe_file_entity(parties: dict[str, Party]) -> None:
    refused(XXE_FILE, "unsafe-xml", trusted=[parties["rsa"].cert])


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bool]]]:
    """A local TCP port that records whether anything connected: the network XXE must never reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    hits: list[bool] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            hits.append(True)
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    yield server.getsockname()[1], hits
    thread.join()
    server.close()


@pytest.mark.parametrize("form", ["general", "parameter", "external-dtd"])
def test_xxe_network_entity(parties: dict[str, Party], listener: tuple[int, list[bool]], form: str) -> None:
    port, hits = listener
    url = f"http://127.0.0.1:{port}/x.dtd"
    doctype = {
        "general": f'<!DOCTYPE e [<!ENTITY x SYSTEM "{url}">]>',
        "parameter": f'<!DOCTYPE e [<!ENTITY % p SYSTEM "{url}"> %p;]>',
        "external-dtd": f'<!DOCTYPE e SYSTEM "{url}">',
    }[form]
    data = (f'<?xml version="1.0"?>{doctype}<soapenv:Envelope xmlns:soapenv="{SOAP_NS}">'
            f'<soapenv:Body>{"&x;" if form == "general" else ""}</soapenv:Body></soapenv:Envelope>').encode()
    refused(data, "unsafe-xml", trusted=[parties["rsa"].cert])
    assert hits == []


def test_billion_laughs(parties: dict[str, Party]) -> None:
    refused(BILLION_LAUGHS, "unsafe-xml", trusted=[parties["rsa"].cert])


def test_oversized_envelope_refused_before_parsing(parties: dict[str, Party], signed: bytes) -> None:
    refused(signed, "unsafe-xml", trusted=[parties["rsa"].cert], max_bytes=len(signed) - 1)


def _add_transform(signed: bytes, algorithm: str, child: etree._Element | None = None) -> bytes:
    root = tree(signed)
    transforms = signature_of(root).find(f".//{q(DS_NS, 'Transforms')}")
    transform = etree.SubElement(transforms, q(DS_NS, "Transform"), Algorithm=algorithm)
    if child is not None:
        transform.append(child)
    return out(root)


def test_xslt_transform(con_party: Party, signed: bytes) -> None:
    stylesheet = etree.fromstring(
        b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
        b'<xsl:template match="/"><xsl:copy-of select="document(\'file:///etc/passwd\')"/></xsl:template>'
        b'</xsl:stylesheet>')
    data = _add_transform(signed, "http://www.w3.org/TR/1999/REC-xslt-19991116", stylesheet)
    refused(data, "forbidden-transform", trusted=[con_party.cert])


def test_xpath_transform_tampered(con_party: Party, signed: bytes) -> None:
    xpath = etree.Element(q(DS_NS, "XPath"))
    xpath.text = "not(ancestor-or-self::*[local-name()='iin'])"
    data = _add_transform(signed, "http://www.w3.org/TR/1999/REC-xpath-19991116", xpath)
    refused(data, "forbidden-transform", trusted=[con_party.cert])


def test_xpath_transform_validly_signed_by_the_pinned_key(parties: dict[str, Party], envelope: bytes) -> None:
    """libxmlsec1 makes a signature that verifies, excluding the IIN from the digest: only policy refuses it."""
    party = parties["rsa"]
    signed = xmlsec_sign(envelope, party, extra_transform=(
        xmlsec.constants.TransformXPath, "not(ancestor-or-self::*[local-name()='iin'])"))
    xmlsec_verify(signed, party.cert)  # a genuine signature
    root = tree(signed)
    root.find(f".//{{{CON_NS}}}iin").text = "990101300011"
    xmlsec_verify(out(root), party.cert)  # ...that does not cover the IIN
    refused(out(root), "forbidden-transform", trusted=[party.cert])


def test_with_comments_canonicalization_validly_signed(parties: dict[str, Party], envelope: bytes) -> None:
    party = parties["ec"]
    signed = xmlsec_sign(envelope, party, c14n=xmlsec.constants.TransformExclC14NWithComments)
    xmlsec_verify(signed, party.cert)
    refused(signed, "forbidden-transform", trusted=[party.cert])


def test_with_comments_transform_tampered(con_party: Party, signed: bytes) -> None:
    data = _add_transform(signed, "http://www.w3.org/2006/12/xml-c14n11#WithComments")
    refused(data, "forbidden-transform", trusted=[con_party.cert])


def test_with_comments_signed_by_signxml(parties: dict[str, Party], envelope: bytes) -> None:
    party = parties["rsa"]
    data = signxml_sign(envelope, key=party.key, cert=party.cert,
                        c14n=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0_WITH_COMMENTS)
    refused(data, "forbidden-transform", trusted=[party.cert])


def test_inclusive_c14n_refused(parties: dict[str, Party], envelope: bytes) -> None:
    party = parties["rsa"]
    data = signxml_sign(envelope, key=party.key, cert=party.cert, c14n=CanonicalizationMethod.CANONICAL_XML_1_1)
    refused(data, "forbidden-transform", trusted=[party.cert])


def test_comment_injected_inside_signed_text(con_party: Party, signed: bytes) -> None:
    """Comments are outside exc-c14n's digest, so the signature holds; what is returned has no comment to
    truncate a value at (the SAML comment-truncation attack)."""
    root = tree(signed)
    ref = root.find(f".//{{{CON_NS}}}referralId")
    ref.text = "REF-"
    ref.append(etree.Comment("injected"))
    ref[-1].tail = "0"
    verified = verify_envelope(out(root), trusted=[con_party.cert], now=NOW)
    returned = verified.body.find(f".//{{{CON_NS}}}referralId")
    assert returned.text == "REF-0" and len(returned) == 0
    assert not [n for n in verified.body.iter() if isinstance(n, etree._Comment)]


def test_hmac_signature_method_keyed_with_the_public_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    """Algorithm confusion: HMAC keyed with the counterpart's public certificate, which anyone has."""
    party = parties["rsa"]
    data = signxml_sign(envelope, key=party.cert_pem, cert=None, algorithm=SignatureMethod.HMAC_SHA256)
    refused(data, "forbidden-algorithm", trusted=[party.cert])


def test_sha1_algorithms_refused(parties: dict[str, Party], envelope: bytes) -> None:
    party = parties["rsa"]
    data = signxml_sign(envelope, key=party.key, cert=party.cert, algorithm=SignatureMethod.RSA_SHA1)
    refused(data, "forbidden-algorithm", trusted=[party.cert])
    data = signxml_sign(envelope, key=party.key, cert=party.cert, digest=DigestAlgorithm.SHA1)
    refused(data, "forbidden-algorithm", trusted=[party.cert])


def test_ecdsa_method_claimed_over_an_rsa_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    attacker = make_party("ec", "x")
    data = signxml_sign(envelope, key=attacker.key, cert=None, algorithm=SignatureMethod.ECDSA_SHA256)
    # signxml put the attacker's KeyValue there (refused as such); without it only the pinned RSA key is left
    refused(data, "unexpected-key-info", trusted=[parties["rsa"].cert])
    refused(without_key_info(data), "bad-signature", trusted=[parties["rsa"].cert])


def test_key_confusion_attacker_certificate_in_key_info(parties: dict[str, Party], envelope: bytes) -> None:
    signed = parties["attacker"].signer().sign(envelope)
    refused(signed, "untrusted-certificate", trusted=[parties["rsa"].cert])


def test_key_confusion_pinned_certificate_claimed_attacker_key_used(parties: dict[str, Party],
                                                                    envelope: bytes) -> None:
    """KeyInfo is not signed: the attacker puts ЦОН's certificate there over a signature by its own key."""
    signed = tree(parties["attacker"].signer().sign(envelope))
    cert_el = signature_of(signed).find(f".//{q(DS_NS, 'X509Certificate')}")
    real = tree(parties["rsa"].signer().sign(envelope))
    cert_el.text = signature_of(real).find(f".//{q(DS_NS, 'X509Certificate')}").text
    refused(out(signed), "bad-signature", trusted=[parties["rsa"].cert])


def test_key_confusion_key_value_next_to_the_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    attacker = parties["attacker"]
    root, body_ref, ts_ref = wss_layout(envelope)
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, c14n_algorithm=C14N)
    signed = out(signer.sign(root, key=attacker.key, cert=[parties["rsa"].cert_pem.decode()],
                             reference_uri=[body_ref, ts_ref], always_add_key_value=True))
    refused(signed, "unexpected-key-info", trusted=[parties["rsa"].cert])


def test_key_confusion_no_key_info_attacker_key(parties: dict[str, Party], envelope: bytes) -> None:
    data = without_key_info(parties["attacker"].signer().sign(envelope))
    refused(data, "bad-signature", trusted=[parties["rsa"].cert, parties["ec"].cert])


def test_unknown_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    stranger = make_party("ec", "stranger")
    refused(stranger.signer().sign(envelope), "untrusted-certificate", trusted=[parties["rsa"].cert])


def test_nothing_pinned(signed: bytes) -> None:
    refused(signed, "untrusted-certificate", trusted=[])


def test_another_partys_valid_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    """МТСЗН's key is valid and pinned for МТСЗН; it must not pass as ЦОН."""
    pins = {"con": [parties["rsa"].cert, parties["ec"].cert], "mtszn": [parties["other_agency"].cert]}
    signed = parties["other_agency"].signer().sign(envelope)
    assert verify_envelope(signed, trusted=pins["mtszn"], now=NOW).certificate == parties["other_agency"].cert
    refused(signed, "untrusted-certificate", trusted=pins["con"])


@pytest.mark.parametrize("by", ["serial", "fingerprint", "fingerprint-colons"])
def test_revoked_certificate(con_party: Party, signed: bytes, by: str) -> None:
    fp = fingerprint(con_party.cert)
    entry: int | str = {"serial": con_party.cert.serial_number, "fingerprint": fp,
                        "fingerprint-colons": ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()}[by]
    refused(signed, "revoked-certificate", trusted=[con_party.cert], revoked={entry})


def test_revoked_certificate_without_key_info_hint(parties: dict[str, Party], envelope: bytes) -> None:
    data = without_key_info(parties["rsa"].signer().sign(envelope))
    refused(data, "revoked-certificate", trusted=[parties["rsa"].cert], revoked={parties["rsa"].cert.serial_number})


def test_expired_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    party = parties["expired"]
    signed = party.signer().sign(envelope)
    refused(signed, "expired-certificate", trusted=[party.cert])


def test_not_yet_valid_certificate(parties: dict[str, Party], envelope: bytes) -> None:
    party = parties["not_yet"]
    refused(party.signer().sign(envelope), "expired-certificate", trusted=[party.cert])


@pytest.mark.parametrize("offset", [timedelta(minutes=11), timedelta(hours=-1), timedelta(days=2)])
def test_stale_or_future_timestamp(con_party: Party, signed: bytes, offset: timedelta) -> None:
    refused(signed, "stale-timestamp", trusted=[con_party.cert], now=NOW + offset)


@pytest.mark.parametrize("offset", [timedelta(minutes=-4), timedelta(minutes=9)])
def test_timestamp_within_the_skew_is_accepted(con_party: Party, signed: bytes, offset: timedelta) -> None:
    verify_envelope(signed, trusted=[con_party.cert], now=NOW + offset, max_skew=timedelta(minutes=5))


def test_unexpected_reference_to_a_payload_element(parties: dict[str, Party], envelope: bytes) -> None:
    """A genuine signature by the pinned key over the payload element only: not the Body, not accepted."""
    party = parties["rsa"]
    root, _, ts_ref = wss_layout(envelope)
    body_of(root)[0].set("Id", "op")
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, c14n_algorithm=C14N)
    signed = out(signer.sign(root, key=party.key, cert=[party.cert], reference_uri=["#op", ts_ref]))
    refused(signed, "unexpected-reference", trusted=[party.cert])


def test_a_third_reference(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    signed_info = signature_of(root).find(q(DS_NS, "SignedInfo"))
    signed_info.append(copy.deepcopy(signed_info.findall(q(DS_NS, "Reference"))[0]))
    refused(out(root), "unexpected-reference", trusted=[con_party.cert])


def test_whole_document_reference(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    signature_of(root).find(f".//{q(DS_NS, 'Reference')}").set("URI", "")
    refused(out(root), "unexpected-reference", trusted=[con_party.cert])


def test_signature_outside_the_security_header(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    sig = signature_of(root)
    security_of(root).remove(sig)
    root.find(q(SOAP_NS, "Header")).append(sig)
    refused(out(root), "bad-envelope", trusted=[con_party.cert])


@pytest.mark.parametrize("value", ["", "not base64!", "AAAA"])
def test_garbage_signature_value(con_party: Party, signed: bytes, value: str) -> None:
    root = tree(signed)
    signature_of(root).find(q(DS_NS, "SignatureValue")).text = value
    refused(out(root), "bad-signature", trusted=[con_party.cert])


@pytest.mark.parametrize("value", ["", "AAAA"])
def test_garbage_digest_value(con_party: Party, signed: bytes, value: str) -> None:
    root = tree(signed)
    signature_of(root).find(f".//{q(DS_NS, 'DigestValue')}").text = value
    refused(out(root), "bad-signature", trusted=[con_party.cert])


def test_garbage_key_info_certificate(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    signature_of(root).find(f".//{q(DS_NS, 'X509Certificate')}").text = "MIIB"
    refused(out(root), "untrusted-certificate", trusted=[con_party.cert])


@pytest.mark.parametrize("field,value", [("Created", "yesterday"), ("Expires", "2026-03-02T04:25:00")])
def test_malformed_signed_timestamp(parties: dict[str, Party], envelope: bytes, field: str, value: str) -> None:
    """Signed by the pinned key, so only the timestamp rules can refuse it."""
    party = parties["rsa"]
    root, body_ref, ts_ref = wss_layout(envelope)
    root.find(f".//{q(WSU_NS, field)}").text = value
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, c14n_algorithm=C14N)
    signed = out(signer.sign(root, key=party.key, cert=[party.cert], reference_uri=[body_ref, ts_ref]))
    refused(signed, "bad-timestamp", trusted=[party.cert])


def test_not_a_soap_envelope(con_party: Party, signed: bytes) -> None:
    root = tree(signed)
    root.tag = "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    refused(out(root), "bad-envelope", trusted=[con_party.cert])
