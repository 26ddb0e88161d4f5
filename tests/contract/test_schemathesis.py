"""The API contract: schemathesis runs every operation of openapi/openapi.json against a live gateway.

Real HTTP on loopback (uvicorn on a free port, tests/harness.Stack, with every counterpart's simulator), every
check schemathesis has (server errors, status codes, content types, response schemas and headers, negative
data rejected, schema-valid data accepted, undeclared methods answered 405 with `Allow`, authentication
enforced), a fixed seed and a bounded number of examples per operation. Requests are signed by an auth hook:
RFC 9421 with the Probation IS's registered key (role `system`) or a counterpart's pinned key, bearer tokens for
administrators and auditors; the gateway runs with authentication on, as in production.

The document tested is the checked-in file; the test first checks that the live gateway serves exactly it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation

from gateway.canonical.iin import iin_check_digit
from gateway.config import ROOT
from gateway.pipeline.ports import WireRequest
from security.parties import ensure_party_key
from tests.harness import Stack

DOCUMENT = ROOT / "openapi" / "openapi.json"
SIGNATURE_FIELDS = ("content-digest", "signature-input", "signature")
# Judged by the engine schemathesis judges with, so a key it drew as invalid is never replaced by a valid one.
IDEMPOTENCY_KEY = jsonschema_rs.validator_for(json.loads(DOCUMENT.read_text(encoding="utf-8"))["components"]
                                              ["parameters"]["Idempotency-Key"]["schema"])
MAX_EXAMPLES = 25
SEED = 16

# Rules the schema states in words, not in JSON Schema: a request the schema admits may still be refused with
# the operation's documented 422 (checked by status and content type like any other answer).
SEMANTIC_422 = {
    # the body's name must be the path's, pinned keys must be readable PEM/JWK/files
    "/v1/admin/counterparts/{name}": ["PUT", "PATCH"],
    # each counterpart's own wire format, which no one schema describes
    "/v1/inbound/{counterpart}": ["POST"],
    # a chain export is the whole log: no scope with format=chain
    "/v1/audit/export": ["GET"],
}


# ---- generating what the schema names but JSON Schema cannot say --------------------------------------------


@st.composite
def _iins(draw: Any) -> str:
    birth = draw(st.dates(min_value=datetime(1930, 1, 1).date(), max_value=datetime(2008, 12, 31).date()))
    century = (3 if birth.year < 2000 else 5) + draw(st.integers(0, 1))
    serial = draw(st.integers(0, 9999))
    for s in range(serial, serial + 10000):
        first11 = f"{birth:%y%m%d}{century}{s % 10000:04d}"
        check = iin_check_digit(first11)
        if check is not None:
            return first11 + str(check)
    raise AssertionError("no IIN for that date")  # pragma: no cover


OFFSETS = [timezone.utc, timezone(timedelta(hours=5)), timezone(timedelta(hours=6)), timezone(timedelta(hours=-3))]


@st.composite
def _timestamps(draw: Any) -> str:
    """RFC 3339 date-times the gateway takes everywhere: from 2000 on, not ahead of its clock (occurred_at)."""
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 1, 12), max_value=datetime(2026, 1, 1)))
    return moment.replace(tzinfo=timezone.utc).astimezone(draw(st.sampled_from(OFFSETS))).isoformat()


schemathesis.openapi.format("kz-iin", _iins())
schemathesis.openapi.format("date-time", _timestamps())
# A message_id the gateway has seen with other content is a documented conflict: fresh ids for fresh content.
schemathesis.openapi.format("uuid", st.builds(lambda: str(uuid.uuid4())))


# ---- signing: the auth hook ---------------------------------------------------------------------------------


class GatewayAuth(requests.auth.AuthBase):
    """Signs each request as the caller the operation's `x-roles` admits, just before it is sent."""

    def __init__(self, stack: Stack, roles: dict[tuple[str, str], list[str]]) -> None:
        self.stack = stack
        self.roles = roles
        self.system = stack.system_key.http_signer()
        self.peers = {name: ensure_party_key(stack.keys_dir, name).http_signer() for name in ("mio-kz-35", "mtszn",
                                                                                                "health")}

    def _roles_for(self, method: str, path: str) -> list[str]:
        for (template_method, template), roles in self.roles.items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path) and template_method == method:
                return roles
        # An undeclared method (schemathesis probes them): sign as the path's callers would.
        return next((r for (_, t), r in self.roles.items()
                     if re.match("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t)) + "$", path)), [])

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        path = r.path_url.split("?")[0]
        roles = self._roles_for(r.method or "GET", path)
        if "admin" in roles:
            r.headers["Authorization"] = f"Bearer {self.stack.admin_token}"
            return r
        if "auditor" in roles:
            r.headers["Authorization"] = f"Bearer {self.stack.auditor_token}"
            return r
        if "counterpart" in roles:
            name = path.rsplit("/", 1)[-1]
            signer = self.peers.get({"mio": "mio-kz-35"}.get(name, name), self.peers["mio-kz-35"])
        elif "system" in roles:
            signer = self.system
        else:
            return r  # public
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = tuple((k, v) for k, v in r.headers.items() if k.lower() not in SIGNATURE_FIELDS)
        signed = signer.sign_request(WireRequest(r.method or "GET", r.path_url, headers, body), target_uri=r.url)
        for name in SIGNATURE_FIELDS:
            r.headers.pop(name, None)
        for name, value in signed.headers:
            if name.lower() in SIGNATURE_FIELDS:
                r.headers[name] = value
        return r


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Idempotency keys are remembered 24 h per client: a drawn key used again with another body is the documented
    422 idempotency-key-reused. A key drawn valid stays valid but is made unique; a key drawn invalid is sent."""
    headers = case.headers
    key = headers.get("Idempotency-Key") if headers else None
    negative = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    if isinstance(key, str) and not negative and IDEMPOTENCY_KEY.is_valid(key):
        headers["Idempotency-Key"] = str(uuid.uuid4())


class _Deferred(requests.auth.AuthBase):
    """The schema is loaded at collection; the gateway (and so the keys) exist once the fixture runs."""

    target: GatewayAuth | None = None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        assert self.target is not None, "the live_gateway fixture sets the signer"
        return self.target(r)


AUTH = _Deferred()
CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "database": "none"},
    "checks": {"enabled": True},
    "output": {"sanitization": {"enabled": False}},
    "operations": [
        {"include-path": path, "include-method": methods,
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}}}
        for path, methods in SEMANTIC_422.items()
    ],
})
schema = schemathesis.openapi.from_path(DOCUMENT, config=CONFIG)
schema.auth.set_from_requests(AUTH)


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("contract")
    stack = Stack(tmp, f"sqlite+aiosqlite:///{tmp / 'gateway.db'}", national=("con", "mtszn", "health"))
    for name in ("mtszn", "health"):  # they call back signed with the key pinned to their instance
        ensure_party_key(stack.keys_dir, name)
    stack.start_gateway(home=tmp / "home")
    served = requests.get(f"{stack.gateway_url}/openapi.json", timeout=10).json()
    assert served == json.loads(DOCUMENT.read_text(encoding="utf-8")), "the live gateway serves another document"
    roles = {(method.upper(), path): op.get("x-roles", []) for path, ops in served["paths"].items()
             for method, op in ops.items()}
    AUTH.target = GatewayAuth(stack, roles)
    started = time.monotonic()
    try:
        yield stack.gateway_url
    finally:
        AUTH.target = None
        stack.close()
        print(f"\nschemathesis: {len(roles)} operations in {time.monotonic() - started:.0f} s")


@pytest.mark.slow
@schema.parametrize()
def test_every_operation_keeps_the_contract(case: Any, live_gateway: str) -> None:
    case.call_and_validate(base_url=live_gateway)
