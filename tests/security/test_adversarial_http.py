"""Adversarial calls over real HTTP: forged, replayed or escalated, each refused and stored only as a security event."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from adapters.con.codec import CONTENT_TYPE as SOAP_CONTENT_TYPE
from adapters.mio.simulator import create_app as mio_app
from gateway.api.auth import CHALLENGE
from gateway.clients import add_client
from gateway.config import ROOT
from gateway.samples import SampleCases
from gateway.storage.clients import ClientStore
from gateway.storage.db import create_engines
from gateway.storage.store import Store
from security.access import token_hash
from security.parties import PartyKey, ensure_party_key
from security.xmlsig import fingerprint
from tests.conftest import PG_URL, _reset_postgres
from tests.harness import Stack, ThreadServer, free_port, sim_stats, wait_for, wait_ready, write_counterparts
from tests.integration.test_bad_input import _query, assert_problem
from tests.security import attacks as atk
from tests.security.test_xmlsig import BILLION_LAUGHS, XXE_FILE

JSON = "application/json"
EVIL_IIN = "990101300011"  # what an attacker slips into an unsigned copy; must never reach a row either
BUSINESS = ("messages", "deliveries", "cases", "referrals")


# ---- one gateway per backend, shared by every case ---------------------------------------------------------


@dataclass
class Arena:
    """A running gateway with counterparts pinned for every attack: revoked and expired keys, a rogue МИО."""

    stack: Stack
    parties: dict[str, PartyKey]
    rogue: ThreadServer
    canary: atk.Canary
    tokens: dict[str, str]
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=30)  # no auth of its own: each case brings exactly its headers

    def url(self, path: str) -> str:
        return self.stack.gateway_url + path

    @property
    def system(self) -> PartyKey:
        return self.stack.system_key

    def snapshot(self) -> tuple[tuple[int, ...], int]:
        """Business row counts (plus exchanges other than security events) and the last exchanges id."""
        counts = [f"(SELECT count(*) FROM {t})" for t in BUSINESS]
        counts += ["(SELECT count(*) FROM exchanges WHERE hop <> 'refused')",
                   "(SELECT coalesce(max(id), 0) FROM exchanges)"]
        row = _query(self.stack.database_url, "SELECT " + ", ".join(counts))[0]
        return tuple(row[:-1]), row[-1]

    def exchanges_after(self, last_id: int) -> list[tuple]:
        return _query(self.stack.database_url,
                      "SELECT hop, peer, message_id, delivery_id, request_bytes, status_code, result, error"
                      " FROM exchanges WHERE id > ? ORDER BY id", last_id)


def _with_clients(database_url: str, work: Callable[[ClientStore], Any]) -> Any:
    async def main() -> Any:
        engines = create_engines(database_url)
        store = Store(engines)
        try:
            return await work(ClientStore(store))
        finally:
            await store.committer.stop()
            await engines.dispose()

    return asyncio.run(main())


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def arena(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    # Module-scoped (unlike conftest's `stack`): one gateway per backend for ~80 cases, a stack costs ~1 s.
    tmp = tmp_path_factory.mktemp(f"adversarial-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
    else:
        why = _reset_postgres(PG_URL)
        if why:
            if os.environ.get("CI"):
                pytest.fail(f"{why} (PostgreSQL tests are mandatory in CI)")
            pytest.skip(why)
        url = PG_URL
    stack = Stack(tmp, url, national=("con",))
    canary = atk.Canary()
    try:
        keys = stack.keys_dir
        parties = {
            "intruder": ensure_party_key(keys, "intruder"),  # registered nowhere
            "attacker-ec": ensure_party_key(keys, "attacker-ec", algorithm="ecdsa-p256"),
            "stranger-ec": ensure_party_key(keys, "stranger-ec", algorithm="ecdsa-p256"),
            "impostor": atk.impostor(keys, "impostor", subject_cn="con"),
            "someone-else": ensure_party_key(keys, "someone-else"),
            "con": ensure_party_key(keys, "con", algorithm="ecdsa-p256"),
            "health": ensure_party_key(keys, "health", algorithm="ecdsa-p256"),  # EC: it can sign XML too
            "con-revoked": ensure_party_key(keys, "con-revoked", algorithm="ecdsa-p256"),
            "con-expired": atk.expired_party(keys, "con-expired", algorithm="ecdsa-p256"),
            "mio-kz-10-revoked": ensure_party_key(keys, "mio-kz-10-revoked"),
            "mio-kz-11-expired": atk.expired_party(keys, "mio-kz-11-expired"),
            "mio-kz-35": ensure_party_key(keys, "mio-kz-35"),
            "probation-is-2": ensure_party_key(keys, "probation-is-2"),
        }
        # The МИО of KZ-35 answers with a valid signature by a key that is not the one pinned for it.
        rogue = ThreadServer(mio_app(name="mio-kz-35", callback_url=f"{stack.gateway_url}/v1/inbound/mio",
                                     signer=stack.sim_signer("someone-else"))).start()
        stack.servers.append(rogue)
        retry, con_url = stack.retry, stack.sims["con"].url
        write_counterparts(stack.counterparts, [
            {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url, "retry": retry,
             "timeout_s": 5},
            {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": rogue.url, "retry": retry,
             "timeout_s": 5},
            {"name": "mio-kz-10-revoked", "counterpart": "mio", "regions": ["KZ-10"], "base_url": stack.mio.url,
             "revoked_keys": [parties["mio-kz-10-revoked"].kid]},
            {"name": "mio-kz-11-expired", "counterpart": "mio", "regions": ["KZ-11"], "base_url": stack.mio.url},
            {"name": "health", "counterpart": "health", "base_url": stack.probation.url},
            {"name": "con", "counterpart": "con", "base_url": con_url},
            {"name": "con-revoked", "counterpart": "con", "regions": ["KZ-10"], "base_url": con_url,
             "revoked_keys": [fingerprint(parties["con-revoked"].certificate)]},
            {"name": "con-expired", "counterpart": "con", "regions": ["KZ-11"], "base_url": con_url},
        ])

        async def more_clients(clients: ClientStore) -> dict[str, str]:
            now = datetime.now(timezone.utc)
            await add_client(clients=clients, client_id="probation-is-2", roles=["system"], now=now,
                             public_key=parties["probation-is-2"].certificate_pem())
            added = await add_client(clients=clients, client_id="auditor-2", roles=["auditor"], now=now)
            return {"auditor-2": added.token or ""}

        tokens = {"admin": stack.admin_token, "auditor": stack.auditor_token,
                  **_with_clients(url, more_clients)}
        stack.start_gateway()
        a = Arena(stack, parties, rogue, canary, tokens)
        yield a
        a.http.close()
    finally:
        canary.close()
        stack.close()


# ---- what each case sends: personal data the refusal and its event must never carry ------------------------


@dataclass
class Bait:
    seed: int
    case: dict = field(init=False)
    other: dict = field(init=False)

    def __post_init__(self) -> None:
        self.case = _case(self.seed)
        self.other = _case(self.seed + 7919)

    @property
    def iin(self) -> str:
        return self.case["body"]["person"]["iin"]

    @property
    def surname(self) -> str:
        return self.case["body"]["person"]["surname"]

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.iin, self.surname, self.other["body"]["person"]["iin"], EVIL_IIN)

    @property
    def message(self) -> bytes:
        return json.dumps(self.case, ensure_ascii=False).encode()

    @property
    def other_message(self) -> bytes:
        return json.dumps(self.other, ensure_ascii=False).encode()

    @cached_property  # fresh ids and times in it: read once, or the signed bytes and the sent ones differ
    def callback(self) -> bytes:
        """A МИО REFERRAL_COMPLETED callback whose outcome names the person."""
        return json.dumps({"eventId": str(uuid.uuid4()), "event": "REFERRAL_COMPLETED",
                           "referralId": f"REF-{self.seed}", "caseRef": self.case["case_id"],
                           "occurredAt": datetime.now(timezone.utc).isoformat(),
                           "outcome": f"placed: {self.surname} {self.iin}"}, ensure_ascii=False).encode()

    @cached_property
    def envelope(self) -> bytes:
        """A ЦОН ReferralNotice SendMessage (unsigned) whose outcome names the person."""
        return atk.con_notice(referral_id=f"REF-{self.seed:09d}", case_ref=self.case["case_id"],
                              outcome=f"документ выдан: {self.surname} {self.iin}")

    @property
    def evil(self) -> str:
        return f"документ выдан: {EVIL_IIN}"


def _case(seed: int, region: str = "KZ-35") -> dict:
    samples = SampleCases(seed=seed)
    return next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == region)


@dataclass
class Attack:
    method: str
    path: str
    body: bytes
    headers: list[tuple[str, str]]
    status: int
    reason: str
    peer: str = "unidentified"  # who the security event names: a verified client, or nobody


def send_refused(a: Arena, attack: Attack, secrets: tuple[str, ...] = ()) -> httpx.Response:
    """Send, expect the problem, then: nothing stored but one security event naming the reason and the body's hash."""
    counts, last_id = a.snapshot()
    r = a.http.request(attack.method, a.url(attack.path), content=attack.body, headers=attack.headers)
    doc = assert_problem(r, attack.status, attack.reason, f"{attack.method} {attack.path}")
    assert doc["instance"] == attack.path
    if attack.status == 401:
        assert r.headers["www-authenticate"] == CHALLENGE
    for secret in secrets:
        assert secret not in r.text, f"the refusal echoes {secret!r}"
    after, _ = a.snapshot()
    assert after == counts, f"a refused request changed the store: {counts} -> {after}"
    events = a.exchanges_after(last_id)
    expected_error = f"{attack.reason}; {attack.method} {attack.path}; sha256={hashlib.sha256(attack.body).hexdigest()}"
    assert events == [("refused", attack.peer, None, None, len(attack.body), attack.status, "refused",
                       expected_error)], events
    for secret in secrets:
        assert all(secret not in str(column) for column in events[0]), f"the security event holds {secret!r}"
    assert a.canary.hits == 0, "the gateway fetched an external entity"
    return r


# ---- the cases ----------------------------------------------------------------------------------------------

SPOOFED = [("X-Client-Id", "admin-1"), ("X-Forwarded-User", "admin-1"), ("X-Remote-User", "admin-1"),
           ("X-Roles", "admin system"), ("Forwarded", 'for=127.0.0.1;by="admin-1";proto=https'),
           ("X-Forwarded-For", "127.0.0.1")]


def _spoofed(a: Arena) -> list[tuple[str, str]]:
    # The system client's own certificate as a TLS-terminator would forward it: claimed, not proven.
    return [*SPOOFED, ("X-SSL-Client-Cert", quote(a.system.certificate_pem().decode()))]


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def _post_message(b: Bait, headers: list[tuple[str, str]], status: int, reason: str,
                  peer: str = "unidentified", body: bytes | None = None) -> Attack:
    return Attack("POST", "/v1/messages", b.message if body is None else body, headers, status, reason, peer)


def _system_signed(a: Arena, b: Bait, **kw: Any) -> list[tuple[str, str]]:
    return atk.signed(a.system, "POST", a.url("/v1/messages"), b.message, **kw)


def _system_forged(a: Arena, b: Bait, **kw: Any) -> list[tuple[str, str]]:
    options: dict[str, Any] = dict(key=a.system.private_key, keyid=a.system.kid, alg="ed25519", method="POST",
                                   url=a.url("/v1/messages"), body=b.message)
    options.update(kw)
    return atk.forge(**options)


def _callback(a: Arena, b: Bait, signer: str | None, status: int, reason: str, peer: str = "unidentified",
              path: str = "/v1/inbound/mio") -> Attack:
    headers = ([("Content-Type", JSON)] if signer is None
               else atk.signed(a.parties[signer], "POST", a.url(path), b.callback))
    return Attack("POST", path, b.callback, headers, status, reason, peer)


def _xml(body: bytes, reason: str) -> Attack:
    return Attack("POST", "/v1/inbound/con", body, [("Content-Type", SOAP_CONTENT_TYPE)], 401, reason)


def _con_signed(a: Arena, b: Bait, party: str = "con", at: datetime | None = None) -> bytes:
    return atk.xml_signer(a.parties[party], at=at).sign(b.envelope)


def _two_labels(a: Arena, b: Bait) -> list[tuple[str, str]]:
    one = _system_forged(a, b, label="sig1")
    two = _system_forged(a, b, label="sig2")
    return [("Content-Type", JSON), ("Content-Digest", atk.field(one, "content-digest")),
            ("Signature-Input", f"{atk.field(one, 'signature-input')}, {atk.field(two, 'signature-input')}"),
            ("Signature", f"{atk.field(one, 'signature')}, {atk.field(two, 'signature')}")]


CASES: dict[str, Callable[[Arena, Bait], Attack]] = {
    # -- no credentials, or credentials only claimed in headers
    "unsigned-message": lambda a, b: _post_message(b, [("Content-Type", JSON)], 401, "missing-signature"),
    "unsigned-with-spoofed-identity-headers": lambda a, b: _post_message(
        b, [("Content-Type", JSON), *_spoofed(a)], 401, "missing-signature"),
    "unsigned-admin-claim-reading-deliveries": lambda a, b: Attack(
        "GET", "/v1/deliveries", b"", _spoofed(a), 401, "missing-signature"),
    "signed-system-request-with-admin-headers": lambda a, b: Attack(
        "GET", "/v1/deliveries", b"", [*atk.signed(a.system, "GET", a.url("/v1/deliveries"), b"", content_type=None),
                                       *_spoofed(a)], 403, "forbidden", "probation-is"),
    "auditor-token-claiming-the-system-client": lambda a, b: _post_message(
        b, [("Content-Type", JSON), *_bearer(a.tokens["auditor"]), ("X-Client-Id", "probation-is"),
            ("X-Forwarded-User", "probation-is")], 403, "forbidden", "auditor-1"),
    "unsigned-counterpart-callback": lambda a, b: _callback(a, b, None, 401, "missing-signature"),
    # -- bearer tokens
    "garbage-bearer-token": lambda a, b: Attack("GET", "/v1/deliveries", b"", _bearer("pgw_" + "A" * 43),
                                                401, "unknown-token"),
    "stored-token-hash-as-token": lambda a, b: Attack(
        "GET", "/v1/deliveries", b"", _bearer(token_hash(a.tokens["admin"])), 401, "unknown-token"),
    "basic-auth-instead-of-bearer": lambda a, b: Attack(
        "GET", "/v1/deliveries", b"", [("Authorization", "Basic " + base64.b64encode(b"admin-1:admin").decode())],
        401, "malformed-token"),
    # -- RFC 9421: keys and algorithms
    "unregistered-key": lambda a, b: _post_message(
        b, atk.signed(a.parties["intruder"], "POST", a.url("/v1/messages"), b.message), 401, "unknown-key"),
    "system-keyid-signed-by-another-key": lambda a, b: _post_message(
        b, _system_forged(a, b, key=a.parties["intruder"].private_key), 401, "bad-signature", "probation-is"),
    "alg-confusion-hmac-keyed-with-the-public-certificate": lambda a, b: _post_message(
        b, _system_forged(a, b, key=a.system.certificate_pem(), alg="hmac-sha256"), 401, "alg-mismatch",
        "probation-is"),
    "alg-confusion-ecdsa-under-an-ed25519-keyid": lambda a, b: _post_message(
        b, _system_forged(a, b, key=a.parties["attacker-ec"].private_key, alg="ecdsa-p256-sha256"), 401,
        "alg-mismatch", "probation-is"),
    # -- RFC 9421: time and freshness
    "created-90s-in-the-future": lambda a, b: _post_message(
        b, _system_signed(a, b, at=datetime.now(timezone.utc) + timedelta(seconds=90)), 401, "created-in-future",
        "probation-is"),
    "expired-signature": lambda a, b: _post_message(
        b, _system_signed(a, b, at=datetime.now(timezone.utc) - timedelta(minutes=10)), 401, "expired",
        "probation-is"),
    "signature-older-than-max-age": lambda a, b: _post_message(
        b, _system_signed(a, b, at=datetime.now(timezone.utc) - timedelta(minutes=6), ttl=timedelta(hours=1)),
        401, "expired", "probation-is"),
    "no-nonce": lambda a, b: _post_message(b, _system_forged(a, b, nonce=None), 401, "missing-parameter",
                                           "probation-is"),
    # -- RFC 9421: what the signature covers
    "body-swapped-under-a-valid-signature": lambda a, b: _post_message(
        b, _system_signed(a, b), 401, "bad-digest", "probation-is", body=b.other_message),
    "body-swapped-and-content-digest-recomputed": lambda a, b: _post_message(
        b, atk.replace(_system_signed(a, b), "content-digest", atk.rfc9421.digest_field(b.other_message)),
        401, "bad-signature", "probation-is", body=b.other_message),
    "content-digest-not-covered": lambda a, b: _post_message(
        b, _system_forged(a, b, components=["@method", "@target-uri", "content-type"]), 401,
        "missing-component", "probation-is"),
    "content-digest-absent-and-not-covered": lambda a, b: _post_message(
        b, _system_forged(a, b, components=["@method", "@target-uri", "content-type"], add_digest=False), 401,
        "missing-component", "probation-is"),
    "covered-content-digest-stripped": lambda a, b: _post_message(
        b, atk.without(_system_signed(a, b), "content-digest"), 401, "missing-component", "probation-is"),
    "content-type-not-covered": lambda a, b: _post_message(
        b, _system_forged(a, b, components=["@method", "@target-uri", "content-digest"]), 401,
        "missing-component", "probation-is"),
    "target-uri-not-covered": lambda a, b: _post_message(
        b, _system_forged(a, b, components=["@method", "content-digest", "content-type"]), 401,
        "missing-component", "probation-is"),
    "signature-over-another-path": lambda a, b: _post_message(
        b, atk.signed(a.system, "POST", a.url("/v1/inbound/mio"), b.message), 401, "bad-signature",
        "probation-is"),
    "signature-over-another-host": lambda a, b: _post_message(
        b, atk.signed(a.system, "POST", a.rogue.url + "/v1/messages", b.message), 401, "bad-signature",
        "probation-is"),
    "signature-over-another-method": lambda a, b: _post_message(
        b, atk.signed(a.system, "PUT", a.url("/v1/messages"), b.message), 401, "bad-signature", "probation-is"),
    # -- RFC 9421: the fields themselves
    "two-signature-labels": lambda a, b: _post_message(b, _two_labels(a, b), 401, "malformed-signature",
                                                       "probation-is"),
    "garbage-signature-fields": lambda a, b: _post_message(
        b, [("Content-Type", JSON), ("Signature-Input", "sig1=garbage"), ("Signature", "sig1=:!!!:")], 401,
        "malformed-signature"),
    "signature-without-signature-input": lambda a, b: _post_message(
        b, atk.without(_system_signed(a, b), "signature-input"), 401, "missing-signature"),
    # -- counterparts: another party's key, unknown, revoked, expired
    "callback-signed-by-another-counterpart": lambda a, b: _callback(a, b, "health", 403, "forbidden",
                                                                     "counterpart:health"),
    "callback-signed-by-the-system-client": lambda a, b: Attack(
        "POST", "/v1/inbound/mio", b.callback, atk.signed(a.system, "POST", a.url("/v1/inbound/mio"), b.callback),
        403, "forbidden", "probation-is"),
    "callback-signed-by-an-unknown-key": lambda a, b: _callback(a, b, "someone-else", 401, "unknown-key"),
    "callback-signed-by-a-revoked-key": lambda a, b: _callback(a, b, "mio-kz-10-revoked", 401, "revoked-key",
                                                               "counterpart:mio-kz-10-revoked"),
    "callback-signed-under-an-expired-certificate": lambda a, b: _callback(
        a, b, "mio-kz-11-expired", 401, "expired-certificate", "counterpart:mio-kz-11-expired"),
    # -- role escalation between clients
    "counterpart-submits-a-message": lambda a, b: _post_message(
        b, atk.signed(a.parties["mio-kz-35"], "POST", a.url("/v1/messages"), b.message), 403, "forbidden",
        "counterpart:mio-kz-35"),
    "counterpart-reads-deliveries": lambda a, b: Attack(
        "GET", "/v1/deliveries", b"", atk.signed(a.parties["mio-kz-35"], "GET", a.url("/v1/deliveries"), b"",
                                                 content_type=None), 403, "forbidden", "counterpart:mio-kz-35"),
    "system-client-reads-deliveries": lambda a, b: Attack(
        "GET", "/v1/deliveries", b"", atk.signed(a.system, "GET", a.url("/v1/deliveries"), b"", content_type=None),
        403, "forbidden", "probation-is"),
    "auditor-submits-a-message": lambda a, b: _post_message(
        b, [("Content-Type", JSON), *_bearer(a.tokens["auditor"])], 403, "forbidden", "auditor-1"),
    "admin-submits-a-message": lambda a, b: _post_message(
        b, [("Content-Type", JSON), *_bearer(a.tokens["admin"])], 403, "forbidden", "admin-1"),
    "admin-token-posts-a-counterpart-callback": lambda a, b: Attack(
        "POST", "/v1/inbound/mio", b.callback, [("Content-Type", JSON), *_bearer(a.tokens["admin"])], 403,
        "forbidden", "admin-1"),
    # -- ЦОН's XML-signed callbacks: wrapping and ids
    "xml-unsigned-envelope": lambda a, b: _xml(b.envelope, "no-signature"),
    "xml-body-changed-after-signing": lambda a, b: _xml(atk.changed_after_signing(_con_signed(a, b), b.evil),
                                                        "bad-signature"),
    "xml-wrapping-signed-body-moved-to-header": lambda a, b: _xml(atk.wrapped_in_header(_con_signed(a, b), b.evil),
                                                                  "unexpected-reference"),
    "xml-wrapping-second-body": lambda a, b: _xml(atk.second_body(_con_signed(a, b), b.evil), "bad-envelope"),
    "xml-wrapping-in-a-signature-object": lambda a, b: _xml(
        atk.wrapped_in_signature_object(_con_signed(a, b), b.evil), "bad-signature"),
    "xml-duplicated-body-id": lambda a, b: _xml(atk.duplicated_body_id(_con_signed(a, b), b.evil), "duplicate-id"),
    "xml-duplicated-timestamp-id": lambda a, b: _xml(atk.duplicated_timestamp_id(_con_signed(a, b)),
                                                     "duplicate-id"),
    "xml-second-signature": lambda a, b: _xml(atk.second_signature(_con_signed(a, b)), "multiple-signatures"),
    "xml-attacker-signature-inside-the-body": lambda a, b: _xml(
        atk.foreign_signature_in_body(_con_signed(a, b), _con_signed(a, b, "attacker-ec")), "multiple-signatures"),
    # -- XML parser attacks
    "xml-xxe-file": lambda a, b: _xml(XXE_FILE, "unsafe-xml"),
    "xml-xxe-network-general-entity": lambda a, b: _xml(atk.network_xxe("general", a.canary.url), "unsafe-xml"),
    "xml-xxe-network-parameter-entity": lambda a, b: _xml(atk.network_xxe("parameter", a.canary.url), "unsafe-xml"),
    "xml-xxe-network-external-dtd": lambda a, b: _xml(atk.network_xxe("external-dtd", a.canary.url), "unsafe-xml"),
    "xml-billion-laughs": lambda a, b: _xml(BILLION_LAUGHS, "unsafe-xml"),
    # -- transforms and comments
    "xml-xslt-transform": lambda a, b: _xml(atk.xslt_transform(_con_signed(a, b)), "forbidden-transform"),
    "xml-xpath-transform-added": lambda a, b: _xml(atk.xpath_transform(_con_signed(a, b)), "forbidden-transform"),
    "xml-xpath-transform-genuinely-signed-by-the-pinned-key": lambda a, b: _xml(
        atk.xpath_signed_by_libxmlsec(b.envelope, a.parties["con"], b.evil), "forbidden-transform"),
    "xml-with-comments-canonicalization-genuinely-signed": lambda a, b: _xml(
        atk.with_comments_signed_by_libxmlsec(b.envelope, a.parties["con"]), "forbidden-transform"),
    # -- algorithm and key confusion
    "xml-hmac-keyed-with-the-public-certificate": lambda a, b: _xml(
        atk.hmac_keyed_with_the_certificate(b.envelope, a.parties["con"]), "forbidden-algorithm"),
    "xml-sha1-digest": lambda a, b: _xml(atk.sha1_digest(b.envelope, a.parties["con"]), "forbidden-algorithm"),
    "xml-impostor-certificate-naming-con": lambda a, b: _xml(_con_signed(a, b, "impostor"),
                                                             "untrusted-certificate"),
    "xml-pinned-certificate-over-an-attacker-signature": lambda a, b: _xml(
        atk.pinned_certificate_over_attacker_signature(_con_signed(a, b, "attacker-ec"), _con_signed(a, b)),
        "bad-signature"),
    "xml-key-value-next-to-the-pinned-certificate": lambda a, b: _xml(
        atk.key_value_next_to_pinned_certificate(b.envelope, a.parties["attacker-ec"], a.parties["con"]),
        "unexpected-key-info"),
    "xml-no-key-info-attacker-key": lambda a, b: _xml(atk.no_key_info(_con_signed(a, b, "attacker-ec")),
                                                      "bad-signature"),
    # -- certificates: another party's, revoked, expired; a stale Timestamp
    "xml-another-partys-valid-certificate": lambda a, b: _xml(_con_signed(a, b, "health"), "untrusted-certificate"),
    "xml-unknown-certificate": lambda a, b: _xml(_con_signed(a, b, "stranger-ec"), "untrusted-certificate"),
    "xml-revoked-certificate": lambda a, b: _xml(_con_signed(a, b, "con-revoked"), "revoked-certificate"),
    "xml-expired-certificate": lambda a, b: _xml(_con_signed(a, b, "con-expired"), "expired-certificate"),
    "xml-stale-timestamp": lambda a, b: _xml(
        _con_signed(a, b, at=datetime.now(timezone.utc) - timedelta(minutes=20)), "stale-timestamp"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_attack_is_refused_and_recorded(arena: Arena, name: str) -> None:
    bait = Bait(zlib.crc32(name.encode()) % 10**6)
    send_refused(arena, CASES[name](arena, bait), bait.secrets + (("root:",) if "xxe" in name else ()))


# ---- attacks that need a first, accepted request -------------------------------------------------------------


def _accepted(r: httpx.Response) -> dict:
    assert r.status_code == 202, r.text[:500]
    return r.json()


def _messages_with_id(a: Arena, message_id: str) -> int:
    return _query(a.stack.database_url, "SELECT count(*) FROM messages WHERE message_id = ?", message_id)[0][0]


def test_the_same_signed_request_twice_is_a_replay(arena: Arena) -> None:
    bait = Bait(501)
    headers = _system_signed(arena, bait)
    _accepted(arena.http.post(arena.url("/v1/messages"), content=bait.message, headers=headers))
    send_refused(arena, Attack("POST", "/v1/messages", bait.message, headers, 401, "replayed-nonce", "probation-is"),
                 bait.secrets)
    assert _messages_with_id(arena, bait.case["message_id"]) == 1


def test_a_replay_to_another_gateway_process_is_refused(arena: Arena) -> None:
    if not arena.stack.database_url.startswith("postgresql"):
        pytest.skip("two gateway processes share a nonce store on PostgreSQL")
    port = free_port()
    # Behind one load balancer both processes know themselves by the same public URL, so one signature fits both.
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=open(arena.stack.tmp / "second-gateway.log", "ab"),
        env=arena.stack.env(GATEWAY_PUBLIC_URL=arena.stack.gateway_url, GATEWAY_WORKER="false"))
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc=proc)
        second = f"http://127.0.0.1:{port}/v1/messages"
        for first_url, replay_url, seed in ((second, arena.url("/v1/messages"), 502),
                                            (arena.url("/v1/messages"), second, 503)):
            bait = Bait(seed)
            headers = _system_signed(arena, bait)
            _accepted(arena.http.post(first_url, content=bait.message, headers=headers))
            counts, last_id = arena.snapshot()
            r = arena.http.post(replay_url, content=bait.message, headers=headers)
            assert_problem(r, 401, "replayed-nonce", replay_url)
            assert arena.snapshot()[0] == counts
            (event,) = arena.exchanges_after(last_id)
            assert event[0:2] == ("refused", "probation-is") and event[-1].startswith("replayed-nonce; POST")
            assert _messages_with_id(arena, bait.case["message_id"]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_revoked_client_is_refused_within_the_directory_refresh(arena: Arena) -> None:
    key = arena.parties["probation-is-2"]
    token = arena.tokens["auditor-2"]
    lookup = f"/v1/messages/{uuid.uuid4()}"  # an unknown id: 404 once authenticated, nothing written

    def system_get() -> httpx.Response:
        return arena.http.get(arena.url(lookup), headers=atk.signed(key, "GET", arena.url(lookup), b"",
                                                                     content_type=None))

    def auditor_get() -> httpx.Response:
        return arena.http.get(arena.url(lookup), headers=_bearer(token))

    assert system_get().status_code == 404 and auditor_get().status_code == 404
    for client_id in ("probation-is-2", "auditor-2"):
        _with_clients(arena.stack.database_url, lambda c, cid=client_id: c.revoke(client_id=cid,
                                                                                  now=datetime.now(timezone.utc)))
    revoked_at = time.monotonic()
    for get in (system_get, auditor_get):
        wait_for(lambda get=get: get().status_code == 401, timeout=4, interval=0.1, what="the revocation to apply")
    # The directory is re-read every 2 s: allow for the polling and a slow machine, not for a cache that never expires.
    took = time.monotonic() - revoked_at
    assert took < 3.5, f"revocation took {took:.1f} s to apply"
    bait = Bait(504)
    send_refused(arena, _post_message(bait, atk.signed(key, "POST", arena.url("/v1/messages"), bait.message),
                                      401, "revoked-client", "probation-is-2"), bait.secrets)
    send_refused(arena, Attack("GET", "/v1/sla/technical", b"", _bearer(token), 401, "revoked-client", "auditor-2"))
    # The other clients are untouched.
    assert arena.stack.auditor.get(lookup).status_code == 404


def test_counterpart_callbacks_replayed_or_comment_injected(arena: Arena) -> None:
    bait = Bait(505)
    # МИО (RFC 9421): accepted once, the same bytes again are a replay.
    headers = atk.signed(arena.parties["mio-kz-35"], "POST", arena.url("/v1/inbound/mio"), bait.callback)
    body = bait.callback
    (mio,) = _accepted(arena.http.post(arena.url("/v1/inbound/mio"), content=body, headers=headers))["accepted"]
    # ЦОН (XML signature): a comment inside signed text does not break the signature; the stored value is the
    # whole signed one, not the text before the comment (the SAML truncation attack).
    signed = _con_signed(arena, bait)
    injected = atk.comment_inside_signed_text(signed)
    (con,) = _accepted(arena.http.post(arena.url("/v1/inbound/con"), content=injected,
                                       headers={"Content-Type": SOAP_CONTENT_TYPE}))["accepted"]
    (content,) = _query(arena.stack.database_url, "SELECT content FROM messages WHERE message_id = ?",
                        con["message_id"])[0]
    assert json.loads(bytes(content))["body"]["referral_id"] == f"REF-{bait.seed:09d}"
    # Both callbacks are relayed to the Probation IS; let that settle so the replays below see a quiet store.
    for accepted in (mio, con):
        wait_for(lambda m=accepted: arena.stack.client.get(f"/v1/messages/{m['message_id']}").json()["status"]
                 == "delivered", what="the callback relayed")
    send_refused(arena, Attack("POST", "/v1/inbound/mio", body, headers, 401, "replayed-nonce",
                               "counterpart:mio-kz-35"), bait.secrets)
    send_refused(arena, _xml(signed, "replayed-nonce"), bait.secrets)


def test_a_response_signed_by_another_partys_key_dead_letters_the_delivery(arena: Arena) -> None:
    samples = SampleCases(seed=506)
    case = _case(506)
    referral = samples.shelter_referral(case["case_id"])
    for message in (case, referral):
        _accepted(arena.stack.client.post("/v1/messages", json=message))
    status = wait_for(lambda: (s := arena.stack.client.get(f"/v1/messages/{referral['message_id']}").json())[
        "status"] == "dead_letter" and s, what="the delivery dead-lettered")
    (delivery,) = status["deliveries"]
    assert delivery["instance"] == "mio-kz-35" and delivery["attempts"] == 1
    assert delivery["reason"].startswith("response signature refused (unknown-key)"), delivery["reason"]
    # The rogue did answer (and sign): it is the answer that was not believed, so no reply was accepted.
    assert sim_stats(arena.rogue)["unique_messages"] >= 1
    replies = _query(arena.stack.database_url, "SELECT type FROM messages WHERE case_id = ? ORDER BY id",
                     case["case_id"])
    assert replies == [("case.registered",), ("referral.requested",)]
    assert [m for m in httpx.get(f"{arena.stack.probation.url}/_sim/received").json()
            if m.get("case_id") == case["case_id"]] == []
    # Its callback, signed by the same stranger's key, is refused at the door as well.
    wait_for(lambda: sim_stats(arena.rogue)["callbacks_sent"] >= 1, what="the rogue's callback")
    events = _query(arena.stack.database_url,
                    "SELECT peer, status_code FROM exchanges WHERE hop = 'refused' AND error LIKE ?",
                    "unknown-key; POST /v1/inbound/mio; %")
    assert ("unidentified", 401) in events
    assert _query(arena.stack.database_url, "SELECT count(*) FROM messages WHERE case_id = ?",
                  case["case_id"])[0][0] == 2
