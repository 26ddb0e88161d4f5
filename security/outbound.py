"""Signing what the gateway sends: RFC 9421 headers or an XML signature, as the counterpart's channel says."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.mapping import Instance
from gateway.pipeline.ports import SignatureChannel
from gateway.wire import WireRequest
from security.httpsig import HttpSigner
from security.keys import KeyStore
from security.xmlsig import SignxmlSigner, XmlSigner


@dataclass
class OutboundSigner:
    """The pipeline's one signing step; each counterpart gets the signature its channel expects."""

    http: HttpSigner | None
    xml: XmlSigner | None
    channels: Mapping[str, SignatureChannel]  # counterpart -> channel, as its adapter declares (see bootstrap)

    def sign(self, request: WireRequest, *, instance: Instance) -> WireRequest:
        if self.channels.get(instance.counterpart) == "xml":
            if self.xml is None:
                return request
            return WireRequest(request.method, request.path, request.headers, self.xml.sign(request.body))
        if self.http is None:
            return request
        return self.http.sign_request(request, target_uri=instance.url + request.path)


def signer_from_store(store: KeyStore, *, channels: Mapping[str, SignatureChannel]) -> OutboundSigner:
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
    return OutboundSigner(http=http, xml=xml, channels=channels)
