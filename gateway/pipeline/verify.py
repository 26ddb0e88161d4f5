"""Verifying what counterparts send (responses and callbacks) against the keys pinned to their instance."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta

from gateway.mapping import Instance, Mappings
from gateway.pipeline.ports import SignatureChannel
from gateway.wire import Clock, WireRequest, WireResponse
from security.httpsig import MAX_FUTURE_SKEW, HttpVerifier, NonceStore, SignatureError, Verified
from security.keys import PublicKey
from security.parties import PinnedKey
from security.xmlsig import XmlSignatureError, fingerprint, verify_envelope




class RevokedKey(SignatureError):
    reason = "revoked-key"


class ExpiredCertificate(SignatureError):
    reason = "expired-certificate"


class CounterpartSignatureError(Exception):
    """A counterpart's message that does not verify; `reason` is a stable slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CounterpartIdentity:
    instance: str
    keyid: str | None  # the JWK thumbprint or certificate fingerprint that verified; None when unsigned (legacy)
    verified: bool


def _revoked(pin: PinnedKey, inst: Instance) -> bool:
    marks = {m.lower().replace(":", "") for m in inst.revoked_keys}
    return pin.kid.lower() in marks or (pin.fingerprint is not None and pin.fingerprint in marks)


class CounterpartVerifier:
    """Per instance: RFC 9421 or XML signatures, by the counterpart's channel; a shared nonce store."""

    def __init__(self, *, mappings: Mappings, pins: dict[str, tuple[PinnedKey, ...]], nonces: NonceStore,
                 clock: Clock, channels: Mapping[str, SignatureChannel], executor: Executor | None = None) -> None:
        self.mappings = mappings
        self.channels = channels  # counterpart -> channel, as its adapter declares (see bootstrap)
        self.executor = executor
        self.pins = pins
        self.nonces = nonces
        self.clock = clock
        self._http = {name: HttpVerifier(resolve_key=self._resolver(name), nonces=nonces, clock=clock,
                                        executor=executor)
                      for name in pins}

    def reconfigure(self, *, mappings: Mappings, pins: dict[str, tuple[PinnedKey, ...]]) -> None:
        self.mappings = mappings
        self.pins = pins
        self._http = {name: HttpVerifier(resolve_key=self._resolver(name), nonces=self.nonces, clock=self.clock,
                                        executor=self.executor)
                      for name in pins}

    def _resolver(self, name: str):  # noqa: ANN202
        def resolve(kid: str) -> PublicKey | None:
            inst = self.mappings.instance(name)
            for pin in self.pins.get(name, ()):
                if pin.kid == kid:
                    if inst is not None and _revoked(pin, inst):
                        raise RevokedKey(f"the key {kid!r} pinned for {name} is revoked")
                    if pin.certificate is not None and pin.certificate.not_valid_after_utc < self.clock():
                        raise ExpiredCertificate(f"the certificate pinned for {name} expired "
                                                 f"{pin.certificate.not_valid_after_utc.isoformat()}")
                    return pin.public_key
            return None
        return resolve

    def instance_for_kid(self, kid: str, *, counterpart: str | None = None) -> Instance | None:
        for inst in self.mappings.counterparts.instances:
            if counterpart is not None and inst.counterpart != counterpart:
                continue
            if any(p.kid == kid for p in self.pins.get(inst.name, ())):
                return inst
        return None

    async def verify_http(self, inst: Instance, *, kind: str, message: WireRequest | WireResponse,
                          target_uri: str, request: WireRequest | None = None) -> Verified:
        verifier = self._http.get(inst.name)
        if verifier is None:
            raise CounterpartSignatureError("unknown-key", f"no key pinned for {inst.name}")
        try:
            if kind == "request":
                assert isinstance(message, WireRequest)
                return await verifier.verify_request(message, target_uri=target_uri)
            assert isinstance(message, WireResponse)
            return await verifier.verify_response(message, request=request, target_uri=target_uri)
        except SignatureError as exc:
            raise CounterpartSignatureError(exc.reason, exc.detail) from exc

    async def verify_xml(self, instances: list[Instance], body: bytes) -> tuple[Instance, bytes, str]:
        """The signed-only envelope and the instance whose pinned certificate verified it."""
        now = self.clock()
        trusted, owner = [], {}
        revoked: list[str] = []
        for inst in instances:
            for pin in self.pins.get(inst.name, ()):
                if pin.certificate is None:
                    continue
                trusted.append(pin.certificate)
                owner[pin.fingerprint] = inst
                if _revoked(pin, inst):
                    revoked.append(pin.fingerprint or "")
        if not trusted:
            raise CounterpartSignatureError("unknown-key", "no certificate pinned for "
                                            + ", ".join(i.name for i in instances))
        try:
            if self.executor is None:
                verified = verify_envelope(body, trusted=trusted, now=now, revoked=revoked)
            else:  # a millisecond or two of parsing and RSA/ECDSA: off the event loop
                verified = await asyncio.get_running_loop().run_in_executor(
                    self.executor, functools.partial(verify_envelope, body, trusted=trusted, now=now,
                                                     revoked=revoked))
        except XmlSignatureError as exc:
            raise CounterpartSignatureError(exc.reason, str(exc)) from exc
        fp = fingerprint(verified.certificate)
        # The signed Body and Timestamp identify the message: the same signed envelope twice is a replay.
        nonce = hashlib.sha256(verified.body_c14n + verified.created.isoformat().encode()).hexdigest()
        keep = verified.expires + timedelta(minutes=5) + MAX_FUTURE_SKEW
        if await self.nonces.seen_or_add(nonce, keyid=fp, expires_at=max(keep, now + MAX_FUTURE_SKEW)):
            raise CounterpartSignatureError("replayed-nonce", "this signed envelope was already received")
        return owner[fp], verified.envelope(), fp

    async def verify_response(self, inst: Instance, *, request: WireRequest, response: WireResponse
                              ) -> tuple[WireResponse, CounterpartIdentity]:
        """The response to decode (for XML: only what was signed), or CounterpartSignatureError."""
        xml = self.channels.get(inst.counterpart) == "xml"
        if not inst.require_signatures and not _carries_signature(xml, response.headers, response.body):
            return response, CounterpartIdentity(inst.name, None, verified=False)
        if xml:
            _, envelope, fp = await self.verify_xml([inst], response.body)
            return WireResponse(response.status, response.headers, envelope), CounterpartIdentity(inst.name, fp, True)
        verified = await self.verify_http(inst, kind="response", message=response, request=request,
                                          target_uri=inst.url + request.path)
        return response, CounterpartIdentity(inst.name, verified.keyid, True)


def _carries_signature(xml: bool, headers: tuple[tuple[str, str], ...], body: bytes) -> bool:
    if xml:
        return b"Signature" in body
    return any(k.lower() == "signature-input" for k, _ in headers)

