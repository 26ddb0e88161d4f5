"""Signing an httpx client's requests (RFC 9421): how a system client such as the Probation IS calls the gateway."""

from __future__ import annotations

from collections.abc import Generator

import httpx

from gateway.wire import WireRequest
from security.httpsig import HttpSigner

_SIGNATURE_FIELDS = ("content-digest", "signature-input", "signature")


class SignatureAuth(httpx.Auth):
    """httpx auth that signs every request, body included, with a fresh nonce (a retry is a new signature)."""

    requires_request_body = True

    def __init__(self, signer: HttpSigner) -> None:
        self.signer = signer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        wire = WireRequest(request.method, request.url.raw_path.decode("ascii"), tuple(request.headers.multi_items()),
                           request.content)
        signed = self.signer.sign_request(wire, target_uri=str(request.url))
        for name, value in signed.headers:
            if name.lower() in _SIGNATURE_FIELDS:
                request.headers[name] = value
        yield request
