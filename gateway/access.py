"""Who is calling: every request authenticated by signature or token, refusals recorded as security events."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from gateway.canonical.errors import GatewayError
from gateway.loops import Loop
from gateway.mapping import Mappings
from gateway.pipeline.ports import SignatureChannel
from gateway.pipeline.verify import CounterpartSignatureError, CounterpartVerifier
from gateway.wire import Clock, WireRequest
from gateway.storage.clients import ClientRow, ClientStore
from gateway.storage.hops import action_row
from gateway.storage.store import Store
from security.access import Principal, same_hash, token_hash
from security.httpsig import HttpVerifier, NonceStore, SignatureError
from security.keys import PublicKey
from security.parties import PinError, parse_pin

log = logging.getLogger("gateway.security")
INBOUND_PREFIX = "/v1/inbound/"


class Unauthenticated(GatewayError):
    """No verified identity: unsigned, badly signed, replayed, unknown or revoked key, bad token."""

    status = 401
    title = "The request is not authenticated"

    def __init__(self, reason: str, detail: str, *, client: str | None = None) -> None:
        super().__init__(detail)
        self.slug = reason
        self.client = client


class Forbidden(GatewayError):
    slug = "forbidden"
    status = 403
    title = "The caller's role does not allow this"


@dataclass(frozen=True)
class _Client:
    row: ClientRow
    key: PublicKey | None


class ClientDirectory:
    """The clients table, re-read at most every `ttl_s`: a revocation elsewhere takes effect within it."""

    def __init__(self, clients: ClientStore, *, ttl_s: float = 2.0, flush_interval_s: float = 30.0) -> None:
        self.clients = clients
        self.ttl_s = ttl_s
        self._by_kid: dict[str, _Client] = {}
        self._by_token: dict[str, _Client] = {}
        self._by_id: dict[str, _Client] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._uses: dict[str, datetime] = {}
        self.loop = Loop("client-use", self._flush_step, interval_s=flush_interval_s, required=False)

    async def _flush_step(self) -> None:
        await self.flush()

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    def note_use(self, client_id: str, at: datetime) -> None:
        """Remember a verified call; `flush` writes the newest per client (a write per call would be a waste)."""
        self._uses[client_id] = at

    async def flush(self) -> None:
        if self._uses:
            uses, self._uses = self._uses, {}
            try:
                await self.clients.mark_used(uses)
            except Exception:
                for client_id, at in uses.items():  # kept for the next try, unless a newer use came meanwhile
                    self._uses.setdefault(client_id, at)
                raise

    async def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.ttl_s:
            return
        async with self._lock:
            if time.monotonic() - self._loaded_at < self.ttl_s:
                return
            by_kid, by_token, by_id = {}, {}, {}
            for row in await self.clients.all():
                key = None
                if row.public_key:
                    try:
                        key = parse_pin(row.public_key.encode()).public_key
                    except PinError:
                        log.error("client %s has an unreadable public key", row.client_id)
                entry = _Client(row, key)
                if row.keyid:
                    by_kid[row.keyid] = entry
                if row.token_hash:
                    by_token[row.token_hash] = entry
                by_id[row.client_id] = entry
            self._by_kid, self._by_token, self._by_id = by_kid, by_token, by_id
            self._loaded_at = time.monotonic()

    async def by_keyid(self, kid: str) -> _Client | None:
        await self._fresh()
        return self._by_kid.get(kid)

    async def by_client_id(self, client_id: str) -> ClientRow | None:
        await self._fresh()
        found = self._by_id.get(client_id)
        return None if found is None else found.row

    async def by_token_hash(self, digest: str) -> _Client | None:
        await self._fresh()
        found = self._by_token.get(digest)
        return found if found is not None and same_hash(found.row.token_hash or "", digest) else None


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    body: bytes  # what the route may process: for a signed XML callback, only what the signature covers


class Authenticator:
    """Identity only from a verified RFC 9421 signature, XML signature or bearer token; never from a header."""

    def __init__(self, *, directory: ClientDirectory, counterparts: CounterpartVerifier, mappings: Mappings,
                 nonces: NonceStore, clock: Clock, base_url: str, channels: Mapping[str, SignatureChannel],
                 insecure_no_auth: bool = False, executor: Executor | None = None) -> None:
        self.directory = directory
        self.channels = channels  # counterpart -> channel: an XML-signed callback carries no signature headers
        self.counterparts = counterparts
        self.mappings = mappings
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.insecure_no_auth = insecure_no_auth
        self._clients_verifier = HttpVerifier(resolve_key=self._client_key, nonces=nonces, clock=clock,
                                              executor=executor)
        self._resolved: dict[str, _Client] = {}

    def _client_key(self, kid: str) -> PublicKey | None:
        entry = self._resolved.get(kid)
        if entry is None:
            return None
        if entry.row.revoked_at is not None:
            raise _RevokedClient(f"client {entry.row.client_id} was revoked {entry.row.revoked_at.isoformat()}")
        return entry.key

    async def authenticate(self, *, method: str, path: str, query: str, headers: tuple[tuple[str, str], ...],
                           body: bytes) -> Authenticated:
        fields = {k.lower(): v for k, v in headers}
        target_uri = self.base_url + path + (f"?{query}" if query else "")
        counterpart = path[len(INBOUND_PREFIX):].split("/")[0] if path.startswith(INBOUND_PREFIX) else None
        if "signature-input" in fields or "signature" in fields:
            return await self._signed(method, target_uri, headers, body, fields, counterpart)
        if counterpart is not None and self.channels.get(counterpart) == "xml" and body.lstrip().startswith(b"<"):
            return await self._xml_callback(counterpart, body)
        authorization = fields.get("authorization", "")
        if authorization:
            return await self._token(authorization)
        if counterpart is not None:
            legacy = [i for i in self.mappings.counterparts.instances
                      if i.counterpart == counterpart and not i.require_signatures]
            if legacy:  # a configured exception, logged as unverified in the exchange log
                return Authenticated(Principal(f"counterpart:{legacy[0].name}", frozenset({"counterpart"}),
                                               "unsigned-legacy", instance=legacy[0].name), body)
        if self.insecure_no_auth:  # the benchmark's security-off baseline (loopback only, see bootstrap)
            return Authenticated(Principal("insecure-no-auth", frozenset({"system"}), "none"), body)
        raise Unauthenticated("missing-signature", "sign the request (RFC 9421) or send a bearer token")

    async def _signed(self, method: str, target_uri: str, headers: tuple[tuple[str, str], ...], body: bytes,
                      fields: dict[str, str], counterpart: str | None) -> Authenticated:
        kid = _keyid(fields.get("signature-input", ""))
        request = WireRequest(method, "", headers, body)
        if kid is not None:
            client = await self.directory.by_keyid(kid)
            if client is not None:
                self._resolved[kid] = client
                try:
                    verified = await self._clients_verifier.verify_request(request, target_uri=target_uri)
                except SignatureError as exc:
                    raise Unauthenticated(exc.reason, exc.detail, client=client.row.client_id) from exc
                self.directory.note_use(client.row.client_id, self.clock())
                return Authenticated(Principal(client.row.client_id, client.row.roles, "signature",
                                               keyid=verified.keyid), body)
            inst = self.counterparts.instance_for_kid(kid)  # the route checks it may speak for the path
            if inst is not None:
                try:
                    verified = await self.counterparts.verify_http(inst, kind="request", message=request,
                                                                   target_uri=target_uri)
                except CounterpartSignatureError as exc:
                    raise Unauthenticated(exc.reason, exc.detail, client=f"counterpart:{inst.name}") from exc
                return Authenticated(Principal(f"counterpart:{inst.name}", frozenset({"counterpart"}), "signature",
                                               keyid=verified.keyid, instance=inst.name), body)
        # Unknown key, or no parsable keyid: let the verifier say which (malformed, missing parameter, unknown key).
        try:
            await self._clients_verifier.verify_request(request, target_uri=target_uri)
        except SignatureError as exc:
            raise Unauthenticated(exc.reason, exc.detail) from exc
        raise Unauthenticated("unknown-key", "the signing key is not registered")  # pragma: no cover

    async def _xml_callback(self, counterpart: str, body: bytes) -> Authenticated:
        instances = [i for i in self.mappings.counterparts.instances if i.counterpart == counterpart]
        try:
            inst, envelope, fp = await self.counterparts.verify_xml(instances, body)
        except CounterpartSignatureError as exc:
            raise Unauthenticated(exc.reason, exc.detail) from exc
        return Authenticated(Principal(f"counterpart:{inst.name}", frozenset({"counterpart"}), "xml-signature",
                                       keyid=fp, instance=inst.name), envelope)

    async def _token(self, authorization: str) -> Authenticated:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed-token", "Authorization must be `Bearer <token>`")
        client = await self.directory.by_token_hash(token_hash(token.strip()))
        if client is None:
            raise Unauthenticated("unknown-token", "the bearer token is not valid")
        if client.row.revoked_at is not None:
            raise Unauthenticated("revoked-client", f"client {client.row.client_id} was revoked",
                                  client=client.row.client_id)
        self.directory.note_use(client.row.client_id, self.clock())
        return Authenticated(Principal(client.row.client_id, client.row.roles, "token"), b"")


class _RevokedClient(SignatureError):
    reason = "revoked-client"


def _keyid(signature_input: str) -> str | None:
    # Only to choose whose key to try; the verifier parses the field properly and checks everything.
    marker = 'keyid="'
    start = signature_input.find(marker)
    if start < 0:
        return None
    end = signature_input.find('"', start + len(marker))
    return signature_input[start + len(marker):end] if end > 0 else None


class SecurityEvents:
    """Refusals in the exchange log: who (if known), why, the hash of the raw bytes; never the payload."""

    def __init__(self, *, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def refused(self, *, client: str | None, reason: str, method: str, path: str, status: int,
                      body: bytes = b"", body_sha256: str | None = None) -> None:
        now = self.clock()
        sha = body_sha256 or hashlib.sha256(body).hexdigest()
        # The log keeps the digest of what was refused, never the bytes: no payload is echoed or kept.
        await self.store.record_hop(action_row(
            hop="refused", peer=client or "unidentified", at=now, status_code=status, result="refused",
            error=f"{reason}; {method} {path}; sha256={sha}", request_bytes=len(body), client=client,
            request_hash=sha))
        log.warning("request refused", extra={"client": client, "reason": reason, "path": path, "status": status})
