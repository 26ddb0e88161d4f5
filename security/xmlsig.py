"""XML signatures over SOAP 1.1 envelopes: WS-Security header, signxml, pinned certificates, only signed content out."""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)
from signxml.algorithms import SignatureConstructionMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, SignXMLException

from gateway.xmlsafe import MAX_XML_BYTES, UnsafeXml, parse_xml

# Layout (chosen: the OASIS WSS 1.0 header, the convention of WSS endpoints such as ШЭП's `bip-sync-wss-gost`):
#
#   soapenv:Envelope
#     soapenv:Header
#       wsse:Security
#         wsu:Timestamp wsu:Id="TS-…"   (wsu:Created, wsu:Expires, UTC)
#         ds:Signature                    (SignedInfo: exc-c14n, rsa-sha256 | ecdsa-sha256;
#                                          Reference #Body-… then Reference #TS-…, each with transforms
#                                          enveloped-signature + exc-c14n and a sha256 digest;
#                                          KeyInfo/X509Data/X509Certificate = the signer's certificate)
#     soapenv:Body wsu:Id="Body-…"
#
# The certificate in KeyInfo is only a hint which pinned certificate to use: it is never trusted by itself.
# No `mustUnderstand` on wsse:Security: the gateway's own codec and the ЦОН simulator are not WSS processors,
# and a mustUnderstand they ignore would be a lie on the wire; whether ШЭП wants one is for its spec to say.

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EC_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"

EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value
ENVELOPED = SignatureConstructionMethod.enveloped.value
SHA256 = DigestAlgorithm.SHA256.value
ALLOWED_SIGNATURE_METHODS = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256})
ALLOWED_TRANSFORMS = frozenset({ENVELOPED, EXC_C14N})
DEFAULT_LIFETIME = timedelta(minutes=5)
DEFAULT_MAX_SKEW = timedelta(minutes=5)
MIN_RSA_BITS = 2048

# Attribute local names signxml resolves `#id` references against (it matches on local-name(), so wsu:Id too).
_ID_NAMES = frozenset({"Id", "ID", "id"})

Reason = Literal[
    "unsafe-xml",  # refused by the hardened parser: too large, DOCTYPE (XXE, entity bombs), not well-formed
    "bad-envelope",  # not a SOAP 1.1 Envelope with one Header holding one wsse:Security and one Body
    "no-signature",
    "multiple-signatures",
    "duplicate-id",  # two elements carry the same Id: the classic wrapping set-up
    "unexpected-reference",  # references other than exactly the Envelope's Body and the header Timestamp
    "forbidden-transform",  # a transform other than enveloped + exc-c14n, or any #WithComments algorithm
    "forbidden-algorithm",  # a SignatureMethod or DigestMethod outside rsa-sha256/ecdsa-sha256/sha256
    "unexpected-key-info",  # KeyInfo holding anything but one X509Certificate (KeyValue, chains, retrievals)
    "untrusted-certificate",  # the certificate in KeyInfo is not one of the pinned certificates
    "expired-certificate",  # the signing certificate is outside its validity period at `now`
    "revoked-certificate",
    "bad-signature",  # the signature or a digest does not verify (content changed, wrong key, key confusion)
    "bad-timestamp",  # the signed Timestamp is missing a field or not an xs:dateTime with an offset
    "stale-timestamp",  # now is outside [Created - skew, Expires + skew] (expired or from the future)
]


class XmlSignatureError(Exception):
    """An envelope refused by signing or verification; `reason` is a stable slug callers map to a status."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason
        self.message = message


SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class XmlSigner(Protocol):
    """Signs a SOAP 1.1 envelope; a national GOST provider plugs in by implementing this one method."""

    def sign(self, envelope: bytes) -> bytes:
        """The same envelope with a signature over its Body and a header Timestamp, serialised."""
        ...


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _xs_datetime(moment: datetime) -> str:
    # WSS 1.0 wants UTC with a Z; milliseconds are the common precision of WSS stacks
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _signature_method(key: SigningKey) -> SignatureMethod:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA signing key needs at least {MIN_RSA_BITS} bits, not {key.key_size}")
        return SignatureMethod.RSA_SHA256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # ECDSA-SHA256 pairs with P-256; another curve would mean another hash to reach the same strength
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an ECDSA signing key must be on P-256, not {key.curve.name}")
        return SignatureMethod.ECDSA_SHA256
    raise TypeError(f"no XML signature algorithm for a {type(key).__name__}")


def _only(parent: etree._Element, tag: str) -> list[etree._Element]:
    return [c for c in parent if c.tag == tag]


@dataclass
class SignxmlSigner:
    """The default XmlSigner: signxml, exc-c14n, RSA-SHA256 or ECDSA-SHA256 by the key's type, sha256 digests."""

    key: SigningKey
    certificate: x509.Certificate
    clock: Callable[[], datetime] = _utcnow
    lifetime: timedelta = DEFAULT_LIFETIME
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.algorithm = _signature_method(self.key)
        if self.certificate.public_key().public_numbers() != self.key.public_key().public_numbers():
            raise ValueError("the certificate does not hold the signing key's public key")

    def sign(self, envelope: bytes) -> bytes:
        try:
            root = parse_xml(envelope)
        except UnsafeXml as exc:
            raise XmlSignatureError("unsafe-xml", str(exc)) from exc
        if root.tag != f"{{{SOAP_NS}}}Envelope":
            raise XmlSignatureError("bad-envelope", "not a SOAP 1.1 Envelope")
        headers, bodies = _only(root, f"{{{SOAP_NS}}}Header"), _only(root, f"{{{SOAP_NS}}}Body")
        if len(bodies) != 1 or len(headers) > 1:
            raise XmlSignatureError("bad-envelope", "an envelope to sign needs one Body and at most one Header")
        if root.find(f".//{{{DS_NS}}}Signature") is not None or root.find(f".//{{{WSSE_NS}}}Security") is not None:
            raise XmlSignatureError("bad-envelope", "the envelope is already signed")
        if headers:
            header = headers[0]
        else:
            header = etree.Element(f"{{{SOAP_NS}}}Header")
            root.insert(0, header)
        body = bodies[0]
        # a fresh id per message: a fixed id would let one message's Body be replayed under another's signature
        body_id, ts_id = f"Body-{self.new_id()}", f"TS-{self.new_id()}"
        body.set(f"{{{WSU_NS}}}Id", body_id)

        # declare wsse/wsu once on the Envelope (readable prefixes instead of lxml's ns0); exc-c14n makes the
        # place of a declaration irrelevant to the digests
        etree.cleanup_namespaces(root, top_nsmap={"wsse": WSSE_NS, "wsu": WSU_NS}, keep_ns_prefixes=list(root.nsmap))
        security = etree.SubElement(header, f"{{{WSSE_NS}}}Security")
        timestamp = etree.SubElement(security, f"{{{WSU_NS}}}Timestamp", {f"{{{WSU_NS}}}Id": ts_id})
        created = self.clock()
        etree.SubElement(timestamp, f"{{{WSU_NS}}}Created").text = _xs_datetime(created)
        etree.SubElement(timestamp, f"{{{WSU_NS}}}Expires").text = _xs_datetime(created + self.lifetime)
        # signxml puts the enveloped signature where this placeholder stands (after the Timestamp, as WSS orders)
        etree.SubElement(security, f"{{{DS_NS}}}Signature", Id="placeholder", nsmap={"ds": DS_NS})

        signer = XMLSigner(
            method=SignatureConstructionMethod.enveloped, signature_algorithm=self.algorithm,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        signed = signer.sign(root, key=self.key, cert=[self.certificate], reference_uri=[f"#{body_id}", f"#{ts_id}"])
        return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


# --------------------------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class VerifiedEnvelope:
    """Only what signxml returned as signed, plus the pinned certificate that verified it."""

    body: etree._Element  # the signed soap:Body, re-read from its canonical form (no comments, no unsigned nodes)
    body_c14n: bytes  # the exact octets the Body digest covers
    created: datetime  # from the signed Timestamp
    expires: datetime
    certificate: x509.Certificate  # the pinned certificate whose key verified the signature
    algorithm: str  # the SignatureMethod URI

    @property
    def payload(self) -> etree._Element | None:
        """The first element inside the signed Body (the SOAP operation)."""
        return next((c for c in self.body if isinstance(c.tag, str)), None)

    def envelope(self) -> bytes:
        """A SOAP 1.1 envelope holding only the signed Body, for decoders that read whole envelopes."""
        env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soapenv": SOAP_NS})
        env.append(copy.deepcopy(self.body))
        return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex: how revocation lists and pins name a certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _norm_fingerprint(value: str) -> str:
    return value.replace(":", "").strip().lower()


def _is_revoked(cert: x509.Certificate, revoked: Collection[int | str]) -> bool:
    serials = {r for r in revoked if isinstance(r, int)}
    prints = {_norm_fingerprint(r) for r in revoked if isinstance(r, str)}
    return cert.serial_number in serials or fingerprint(cert) in prints


def _validity_problem(cert: x509.Certificate, now: datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"certificate {cert.serial_number} is not valid before {cert.not_valid_before_utc.isoformat()}"
    if now > cert.not_valid_after_utc:
        return f"certificate {cert.serial_number} expired at {cert.not_valid_after_utc.isoformat()}"
    return None


def _ids(el: etree._Element) -> list[str]:
    return [v for k, v in el.attrib.items() if etree.QName(k).localname in _ID_NAMES]


def _algorithm(el: etree._Element | None) -> str:
    return (el.get("Algorithm") or "") if el is not None else ""


def _check_signed_info(signature: etree._Element) -> tuple[etree._Element, list[str]]:
    """Refuse what signxml would otherwise tolerate: unknown transforms are silently skipped by it."""
    for el in signature.iter():
        # anywhere in the signature (even unsigned KeyInfo): a comment-preserving c14n makes comments signable
        if isinstance(el.tag, str) and _algorithm(el).endswith("#WithComments"):
            raise XmlSignatureError("forbidden-transform", f"{_algorithm(el)} is not accepted")
    children = [c for c in signature if isinstance(c.tag, str)]
    names = [c.tag for c in children]
    expected = [f"{{{DS_NS}}}SignedInfo", f"{{{DS_NS}}}SignatureValue", f"{{{DS_NS}}}KeyInfo"]
    if names not in (expected, expected[:2]):
        # ds:Object / ds:Manifest would carry references signxml never checks
        raise XmlSignatureError("bad-signature", "the Signature must hold SignedInfo, SignatureValue, KeyInfo only")
    signed_info = children[0]
    c14n = signed_info.find(f"{{{DS_NS}}}CanonicalizationMethod")
    if _algorithm(c14n) != EXC_C14N:
        raise XmlSignatureError("forbidden-transform", f"canonicalization {_algorithm(c14n)!r} is not exc-c14n")
    method = _algorithm(signed_info.find(f"{{{DS_NS}}}SignatureMethod"))
    if method not in {m.value for m in ALLOWED_SIGNATURE_METHODS}:
        raise XmlSignatureError("forbidden-algorithm", f"signature method {method!r} is not accepted")
    uris: list[str] = []
    for ref in signed_info.findall(f"{{{DS_NS}}}Reference"):
        for transform in ref.iterfind(f"{{{DS_NS}}}Transforms/{{{DS_NS}}}Transform"):
            if _algorithm(transform) not in ALLOWED_TRANSFORMS:
                raise XmlSignatureError("forbidden-transform", f"transform {_algorithm(transform)!r} is not accepted")
            extra = [c for c in transform if isinstance(c.tag, str) and c.tag != f"{{{EC_NS}}}InclusiveNamespaces"]
            if extra:
                raise XmlSignatureError("forbidden-transform", "a transform carries an XPath or other parameter")
        digest = _algorithm(ref.find(f"{{{DS_NS}}}DigestMethod"))
        if digest != SHA256:
            raise XmlSignatureError("forbidden-algorithm", f"digest method {digest!r} is not accepted")
        uri = ref.get("URI")
        if uri is None or not uri.startswith("#") or "(" in uri or len(uri) < 2:
            raise XmlSignatureError("unexpected-reference", f"reference URI {uri!r} is not a same-document #id")
        uris.append(uri[1:])
    return signed_info, uris


def _key_info_certificate(signature: etree._Element) -> x509.Certificate | None:
    key_info = signature.find(f"{{{DS_NS}}}KeyInfo")
    if key_info is None:
        return None
    items = [c for c in key_info if isinstance(c.tag, str)]
    certs = [c for d in items if d.tag == f"{{{DS_NS}}}X509Data" for c in d if isinstance(c.tag, str)]
    # one leaf certificate and nothing else: a KeyValue next to it is the key-confusion hazard, a chain means
    # CA trust, which pinning replaces
    if (len(items) != 1 or items[0].tag != f"{{{DS_NS}}}X509Data" or len(certs) != 1
            or certs[0].tag != f"{{{DS_NS}}}X509Certificate"):
        raise XmlSignatureError("unexpected-key-info", "KeyInfo must hold exactly one X509Data/X509Certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((certs[0].text or "").split())))
    except ValueError as exc:
        raise XmlSignatureError("untrusted-certificate", "the KeyInfo certificate cannot be read") from exc


def _hardened_parser() -> etree.XMLParser:
    # signxml re-parses serialised copies; give it the same settings as gateway.xmlsafe, one per call
    # because lxml parser objects are not safe to share across threads
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_pis=True)


def verify_envelope(
    data: bytes,
    *,
    trusted: Sequence[x509.Certificate],
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    revoked: Collection[int | str] = (),
    max_bytes: int = MAX_XML_BYTES,
) -> VerifiedEnvelope:
    """Verify a signed SOAP 1.1 envelope against pinned certificates and return only its signed content.

    `trusted`: the counterpart's pinned certificates (never the system CA store). `revoked`: serial numbers
    (int) or SHA-256 fingerprints (hex str) that no longer verify. `now` must be timezone-aware.
    Raises XmlSignatureError with a stable `reason`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        root = parse_xml(data, max_bytes=max_bytes)
    except UnsafeXml as exc:
        raise XmlSignatureError("unsafe-xml", str(exc)) from exc

    signatures = list(root.iter(f"{{{DS_NS}}}Signature"))
    if not signatures:
        raise XmlSignatureError("no-signature", "the envelope carries no ds:Signature")
    if len(signatures) > 1:
        raise XmlSignatureError("multiple-signatures", f"{len(signatures)} ds:Signature elements, one is allowed")
    signature = signatures[0]

    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise XmlSignatureError("bad-envelope", "not a SOAP 1.1 Envelope")
    headers, bodies = _only(root, f"{{{SOAP_NS}}}Header"), _only(root, f"{{{SOAP_NS}}}Body")
    if len(headers) != 1 or len(bodies) != 1:
        raise XmlSignatureError("bad-envelope", "the Envelope must hold one Header and one Body")
    securities = _only(headers[0], f"{{{WSSE_NS}}}Security")
    if len(securities) != 1 or signature.getparent() is not securities[0]:
        raise XmlSignatureError("bad-envelope", "the Signature must sit in the one wsse:Security header")
    timestamps = _only(securities[0], f"{{{WSU_NS}}}Timestamp")
    if len(timestamps) != 1:
        raise XmlSignatureError("bad-envelope", "wsse:Security must hold one wsu:Timestamp")
    body, timestamp = bodies[0], timestamps[0]

    seen: dict[str, etree._Element] = {}
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for value in _ids(el):
            if value in seen:
                raise XmlSignatureError("duplicate-id", f"Id {value[:64]!r} appears more than once")
            seen[value] = el

    signed_info, uris = _check_signed_info(signature)
    targets = [seen.get(uri) for uri in uris]
    # exactly the Envelope's own Body and the header Timestamp: anything else (a Body moved into a wrapper,
    # an extra element) is where wrapping attacks hide unsigned content
    if len(uris) != 2 or {id(t) for t in targets} != {id(body), id(timestamp)}:
        raise XmlSignatureError("unexpected-reference",
                                "the signature must reference exactly the Envelope's Body and its Timestamp")

    hinted = _key_info_certificate(signature)
    if hinted is not None:
        pinned = [c for c in trusted if fingerprint(c) == fingerprint(hinted)]
        if not pinned:
            raise XmlSignatureError("untrusted-certificate", "the signing certificate is not pinned for this party")
        candidates = pinned
    else:
        candidates = list(trusted)
    if not candidates:
        raise XmlSignatureError("untrusted-certificate", "no certificate is pinned for this party")

    config = SignatureConfiguration(
        location=f"./{{{SOAP_NS}}}Header/{{{WSSE_NS}}}Security/",
        expect_references=2,
        signature_methods=ALLOWED_SIGNATURE_METHODS,
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
        # strict: a KeyValue that disagrees with the pinned certificate is refused, not ignored
        ignore_ambiguous_key_info=False,
        verification_time=now,
    )
    problems: list[XmlSignatureError] = []
    results = None
    for cert in candidates:
        if _is_revoked(cert, revoked):
            problems.append(XmlSignatureError("revoked-certificate", f"certificate {cert.serial_number} is revoked"))
            continue
        invalid = _validity_problem(cert, now)
        if invalid:
            problems.append(XmlSignatureError("expired-certificate", invalid))
            continue
        try:
            results = XMLVerifier().verify(root, x509_cert=cert, expect_config=config, parser=_hardened_parser())
        except InvalidCertificate as exc:
            problems.append(XmlSignatureError("expired-certificate", str(exc)))
            continue
        except InvalidDigest as exc:
            problems.append(XmlSignatureError("bad-signature", f"signed content changed: {exc}"))
            continue
        except (SignXMLException, ValueError, TypeError, etree.LxmlError) as exc:
            # signxml lets a schema-invalid Signature (DocumentInvalid) and an empty value (TypeError from
            # b64decode) escape as such; all are a signature that does not verify
            problems.append(XmlSignatureError("bad-signature", str(exc)[:300]))
            continue
        signer_cert = cert
        break
    if results is None:
        # a revoked or expired certificate outranks "did not verify" when it is known to be the signer's (the
        # KeyInfo named it, or it is the only pin); otherwise which pin failed says nothing and the answer is
        # bad-signature
        for reason in ("revoked-certificate", "expired-certificate"):
            for problem in problems:
                if problem.reason == reason and (hinted is not None or len(candidates) == 1):
                    raise problem
        raise next((p for p in problems if p.reason == "bad-signature"), problems[0])

    if not isinstance(results, list):  # expect_references=2 makes signxml return a list; not an assert (-O)
        raise XmlSignatureError("unexpected-reference", "signxml did not return two references")
    by_tag = {r.signed_xml.tag: r for r in results if r.signed_xml is not None}
    signed_body = by_tag.get(f"{{{SOAP_NS}}}Body")
    signed_ts = by_tag.get(f"{{{WSU_NS}}}Timestamp")
    if signed_body is None or signed_ts is None or len(by_tag) != 2:
        raise XmlSignatureError("unexpected-reference", "signxml did not return a signed Body and Timestamp")

    created, expires = _timestamp(signed_ts.signed_xml)
    if not (created - max_skew <= now <= expires + max_skew):
        raise XmlSignatureError("stale-timestamp", f"timestamp window {created.isoformat()}..{expires.isoformat()} "
                                                   f"does not hold {now.isoformat()}")
    return VerifiedEnvelope(
        body=signed_body.signed_xml, body_c14n=signed_body.signed_data, created=created, expires=expires,
        certificate=signer_cert, algorithm=_algorithm(signed_info.find(f"{{{DS_NS}}}SignatureMethod")),
    )


def _timestamp(ts: etree._Element) -> tuple[datetime, datetime]:
    values = []
    for name in ("Created", "Expires"):
        el = ts.find(f"{{{WSU_NS}}}{name}")
        try:
            moment = datetime.fromisoformat((el.text or "").strip()) if el is not None else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise XmlSignatureError("bad-timestamp", f"wsu:{name} is missing or not an xs:dateTime with an offset")
        values.append(moment)
    if values[0] > values[1]:
        raise XmlSignatureError("bad-timestamp", "wsu:Created is after wsu:Expires")
    return values[0], values[1]
