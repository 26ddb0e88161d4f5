"""Signing what the gateway sends: RFC 9421 for the JSON counterparts, XML signature for ЦОН's SOAP."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.mapping import Instance
from gateway.wire import WireRequest
from security.httpsig import HttpSigner
from security.keys import KeyStore
from security.xmlsig import SignxmlSigner, XmlSigner

XML_COUNTERPARTS = frozenset({"con"})


@dataclass
class OutboundSigner:
    """The pipeline's one signing step; each counterpart gets the signature its channel expects."""

    http: HttpSigner | None
    xml: XmlSigner | None

    def sign(self, request: WireRequest, *, instance: Instance) -> WireRequest:
        if instance.counterpart in XML_COUNTERPARTS:
            if self.xml is None:
                return request
            return WireRequest(request.method, request.path, request.headers, self.xml.sign(request.body))
        if self.http is None:
            return request
        return self.http.sign_request(request, target_uri=instance.url + request.path)


def signer_from_store(store: KeyStore) -> OutboundSigner:
    """Signers for the store's active keys; a channel without an active key sends unsigned (and says so)."""
    http = xml = None
    json_key = store.active_info(channel="json")
    if json_key is not None:
        key = store.active(channel="json")
        http = HttpSigner(keyid=key.kid, private_key=key.private_key)
    xml_key = store.active_info(channel="xml")
    if xml_key is not None:
        key = store.active(channel="xml")
        xml = SignxmlSigner(key=key.private_key, certificate=key.certificate)
    return OutboundSigner(http=http, xml=xml)
