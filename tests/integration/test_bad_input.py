"""Bad input over real HTTP: every refusal is problem+json naming the problem, and a refused request stores nothing."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sqlite3
import uuid
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import httpx
import pytest

from gateway.canonical.messages import parse_message
from gateway.samples import SampleCases
from gateway.storage.db import head_revision
from tests.harness import Stack, sim_stats, wait_for

PROBLEM = "application/problem+json"
PROBLEM_BASE = "urn:probation-gateway:problem:"
TABLES = ("messages", "deliveries", "exchanges", "cases", "referrals")
TEN_MB = 10 * 1024 * 1024
ALMATY = timezone(timedelta(hours=5))


# --- reading the store directly, not through the gateway ----------------------------------------------------


def _query(database_url: str, sql: str, *args: Any) -> list[tuple]:
    """Run one read query on the gateway's store with a driver of our own (`?` placeholders)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with closing(sqlite3.connect(path)) as conn:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    import asyncpg

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    n = 0

    def numbered(_: object) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    pg_sql = re.sub(r"\?", numbered, sql)

    async def go() -> list[tuple]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(pg_sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def row_counts(stack: Stack) -> dict[str, int]:
    # Refusals are recorded as security events (hop 'refused'); business rows are what must not change.
    return {t: _query(stack.database_url, f"SELECT count(*) FROM {t}"
                      + (" WHERE hop <> 'refused'" if t == "exchanges" else ""))[0][0] for t in TABLES}


def rows_for(stack: Stack, message_id: str) -> dict[str, int]:
    return {
        t: _query(stack.database_url, f"SELECT count(*) FROM {t} WHERE message_id = ?", message_id)[0][0]
        for t in ("messages", "deliveries", "exchanges")
    }


# --- helpers -------------------------------------------------------------------------------------------------


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    stack.start_gateway()
    with httpx.Client(base_url=stack.gateway_url, timeout=30, auth=stack.auth) as c:
        yield c


def assert_problem(r: httpx.Response, status: int, slug: str, what: str = "") -> dict:
    assert r.status_code == status, f"{what}: {r.text[:500]}"
    assert r.headers["content-type"].split(";")[0].strip() == PROBLEM, (what, r.headers)
    doc = r.json()
    for key in ("type", "title", "status", "detail"):
        assert key in doc and doc[key] not in (None, ""), (what, key, doc)
    assert doc["status"] == status, what
    assert doc["type"] == PROBLEM_BASE + slug, (what, doc)
    assert isinstance(doc["title"], str) and isinstance(doc["detail"], str)
    return doc


def assert_not_stored(stack: Stack, c: httpx.Client, message_id: str) -> None:
    assert rows_for(stack, message_id) == {"messages": 0, "deliveries": 0, "exchanges": 0}
    doc = assert_problem(c.get(f"/v1/messages/{message_id}"), 404, "not-found")
    assert message_id in doc["detail"]


def _case(seed: int = 11, region: str = "KZ-35") -> dict:
    samples = SampleCases(seed=seed)
    return next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == region)


def _referral(case: dict, seed: int = 12) -> dict:
    return SampleCases(seed=seed).shelter_referral(case["case_id"])


# --- refusals of POST /v1/messages ---------------------------------------------------------------------------


def _malformed(case: dict) -> dict:
    text = json.dumps(case, ensure_ascii=False)
    return {"content": text[: len(text) // 2].encode(), "headers": {"content-type": "application/json"}}


def _unknown_type(case: dict) -> dict:
    return {"json": {**case, "type": "case.deleted"}}


def _bad_iin(case: dict) -> dict:
    iin = case["body"]["person"]["iin"]
    case["body"]["person"]["iin"] = iin[:11] + str((int(iin[11]) + 1) % 10)  # a changed check digit never passes
    return {"json": case}


def _no_offset(case: dict) -> dict:
    case["occurred_at"] = datetime.now(ALMATY).replace(tzinfo=None, microsecond=0).isoformat()
    return {"json": case}


def _future(case: dict) -> dict:
    case["occurred_at"] = (datetime.now(timezone.utc) + timedelta(minutes=10)).astimezone(ALMATY).isoformat()
    return {"json": case}


def _huge(case: dict) -> bytes:
    referral = _referral(case)
    referral["message_id"] = case["message_id"]  # so "nothing stored" is checked for the id in the body
    referral["body"]["details"] = {"note": "я" * (TEN_MB // 2)}  # two bytes each in UTF-8: 10 MB
    data = json.dumps(referral, ensure_ascii=False).encode()
    assert len(data) > TEN_MB
    return data


def _huge_with_length(case: dict) -> dict:
    return {"content": _huge(case), "headers": {"content-type": "application/json"}}


def _huge_chunked(case: dict) -> dict:
    data = _huge(case)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    return {"content": chunks(), "headers": {"content-type": "application/json"}}


REFUSALS: list[tuple[str, Callable[[dict], dict], int, str]] = [
    ("malformed-json", _malformed, 400, "malformed-json"),
    ("unknown-type", _unknown_type, 422, "unknown-message-type"),
    ("invalid-iin", _bad_iin, 422, "invalid-message"),
    ("occurred-at-without-offset", _no_offset, 422, "invalid-message"),
    ("occurred-at-10-min-ahead", _future, 422, "occurred-at-in-future"),
    ("10MB-with-content-length", _huge_with_length, 413, "payload-too-large"),
    ("10MB-chunked", _huge_chunked, 413, "payload-too-large"),
]


def _refused_count(c: httpx.Client, slug: str) -> float:
    prefix = f'gateway_messages_refused_total{{problem="{slug}"}} '
    return next((float(line[len(prefix):]) for line in c.get("/metrics").text.splitlines()
                 if line.startswith(prefix)), 0.0)


def test_refused_messages_are_problem_json_and_store_nothing(stack: Stack, client: httpx.Client) -> None:
    # One gateway for the whole table (a stack per case costs a second each); each case has its own message.
    for seed, (name, build, status, slug) in enumerate(REFUSALS, start=100):
        case = copy.deepcopy(_case(seed=seed))
        message_id = case["message_id"]
        iin, surname = case["body"]["person"]["iin"], case["body"]["person"]["surname"]
        before, refused_before = row_counts(stack), _refused_count(client, slug)
        request = build(case)
        if not isinstance(request.get("content", b""), bytes):
            assert "content-length" not in {k.lower() for k in request["headers"]}  # httpx sends it chunked
        r = client.post("/v1/messages", **request)
        doc = assert_problem(r, status, slug, name)
        assert doc.get("instance") == "/v1/messages", name
        # The refusal never echoes personal data, whatever was wrong.
        assert iin not in r.text and surname not in r.text, name
        assert row_counts(stack) == before, f"{name}: a refused request stored something"
        assert_not_stored(stack, client, message_id)
        if status != 413:  # the body limit answers before the app, so 413s are not in this counter
            assert _refused_count(client, slug) == refused_before + 1, name
        if name == "invalid-iin":
            assert [e["pointer"] for e in doc["errors"]] == ["/body/body/person/iin"]
            assert "IIN" in doc["detail"] and iin[:11] not in r.text
        if name == "occurred-at-without-offset":
            assert [e["pointer"] for e in doc["errors"]] == ["/body/occurred_at"]

    # The same gateway still takes good messages, including one 4 minutes ahead of its clock.
    case = copy.deepcopy(_case(seed=99))
    case["occurred_at"] = (datetime.now(timezone.utc) + timedelta(minutes=4)).astimezone(ALMATY).isoformat()
    assert client.post("/v1/messages", json=case).status_code == 202
    assert rows_for(stack, case["message_id"])["messages"] == 1


# --- the same message_id twice -------------------------------------------------------------------------------


def test_same_message_id_with_other_content_is_a_conflict_and_changes_nothing(
    stack: Stack, client: httpx.Client
) -> None:
    case = _case(seed=31)
    first = client.post("/v1/messages", json=case)
    assert first.status_code == 202, first.text
    before = row_counts(stack)
    stored = _query(stack.database_url, "SELECT content_hash, content FROM messages WHERE message_id = ?",
                    case["message_id"])
    assert len(stored) == 1

    other = copy.deepcopy(case)
    other["body"]["person"]["surname"] = "Басқа"
    other_type = {"message_id": case["message_id"], "type": "plan.approved", "case_id": case["case_id"],
                  "occurred_at": case["occurred_at"], "body": {"plan_id": "PLAN-1"}}
    for conflicting in (other, other_type):
        r = client.post("/v1/messages", json=conflicting)
        doc = assert_problem(r, 422, "message-id-conflict")
        assert case["message_id"] in doc["detail"]
        assert case["body"]["person"]["iin"] not in r.text

    after = row_counts(stack)
    # The stored message, its routing and its deliveries are untouched. (Whether the refused attempt itself
    # leaves an audit row in `exchanges` is not asserted here: the pipeline is free to log the hop.)
    assert {t: n for t, n in after.items() if t != "exchanges"} == {t: n for t, n in before.items() if t != "exchanges"}
    assert _query(stack.database_url, "SELECT content_hash, content FROM messages WHERE message_id = ?",
                  case["message_id"]) == stored
    assert stored[0][0] == parse_message(case).content_hash()
    status = client.get(f"/v1/messages/{case['message_id']}").json()
    assert status["type"] == "case.registered" and status["case_id"] == case["case_id"]


def test_same_message_id_same_content_gets_the_same_answer_and_one_delivery(
    stack: Stack, client: httpx.Client
) -> None:
    case = _case(seed=41)
    assert client.post("/v1/messages", json=case).status_code == 202
    referral = _referral(case, seed=42)
    mid = referral["message_id"]

    first = client.post("/v1/messages", json=referral)
    assert first.status_code == 202, first.text
    assert first.headers["content-type"] == "application/json"
    assert first.json()["message_id"] == mid and first.json()["status_url"].endswith(f"/v1/messages/{mid}")
    # Re-sent at once, and re-sent with other whitespace and key order: the same content.
    again = client.post("/v1/messages", json=referral)
    reordered = json.dumps(dict(reversed(list(referral.items()))), indent=3, ensure_ascii=True)
    third = client.post("/v1/messages", content=reordered, headers={"content-type": "application/json"})
    for r in (again, third):
        assert r.status_code == 202, r.text
        assert r.content == first.content
        assert r.headers.get("location") == first.headers.get("location")

    wait_for(lambda: client.get(f"/v1/messages/{mid}").json()["status"] == "delivered", what="delivered")
    # And once more after delivery.
    late = client.post("/v1/messages", json=referral)
    assert late.status_code == 202 and late.content == first.content

    status = client.get(f"/v1/messages/{mid}").json()
    assert len(status["deliveries"]) == 1
    assert status["deliveries"][0]["attempts"] == 1
    assert rows_for(stack, mid)["messages"] == 1 and rows_for(stack, mid)["deliveries"] == 1
    received = [m for m in status["timeline"] if m["hop"] == "received"]
    assert [h["result"] for h in received] == ["accepted", "duplicate", "duplicate", "duplicate"]
    assert len(sim_stats(stack.mio)["attempts"][mid]) == 1
    mio_received = httpx.get(f"{stack.mio.url}/_sim/received").json()
    assert [m["requestId"] for m in mio_received].count(mid) == 1
    metrics = client.get("/metrics").text
    assert 'gateway_messages_duplicate_total{source="probation"} 3.0' in metrics


# --- status lookups, callbacks, operations -------------------------------------------------------------------


MALFORMED_CALLBACKS = {
    "not-json": b"{not json",
    "not-an-object": b"[1, 2, 3]",
    "missing-fields": b'{"event": "REFERRAL_COMPLETED", "eventId": "EVENT"}',
    "unknown-event": b'{"event": "SOMETHING_ELSE", "eventId": "EVENT", "caseRef": "c",'
                     b' "occurredAt": "2026-01-01T00:00:00Z", "referralId": "r"}',
    "no-offset": b'{"event": "REFERRAL_COMPLETED", "eventId": "EVENT", "caseRef": "c",'
                 b' "occurredAt": "2026-01-01T00:00:00", "referralId": "r"}',
}


def test_lookups_and_callbacks_refused_as_problems(stack: Stack, client: httpx.Client) -> None:
    before = row_counts(stack)
    doc = assert_problem(client.get("/v1/messages/not-a-uuid"), 422, "invalid-message")
    assert doc["errors"][0]["pointer"] == "/path/message_id"
    unknown = str(uuid.uuid4())
    doc = assert_problem(client.get(f"/v1/messages/{unknown}"), 404, "not-found")
    assert unknown in doc["detail"]
    assert_problem(client.get("/v1/nowhere"), 404, "not-found")

    mio = stack.peer_client("mio-kz-35")
    for name in ("unknown", "probation"):  # probation is the destination of replies, it sends no callbacks
        doc = assert_problem(mio.post(f"/v1/inbound/{name}", json={"event": "REFERRAL_COMPLETED"}), 404,
                             "unknown-counterpart")
        assert name in doc["detail"]

    for name, body in MALFORMED_CALLBACKS.items():
        event_id = str(uuid.uuid4())
        r = mio.post("/v1/inbound/mio", content=body.replace(b"EVENT", event_id.encode()),
                     headers={"content-type": "application/json"})
        assert_problem(r, 422, "undecodable-wire-message", name)
        assert_not_stored(stack, client, event_id)
    assert row_counts(stack) == before


def test_operations_endpoints(stack: Stack, client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    ready = r.json()
    assert (ready["status"], ready["schema"]) == ("ready", head_revision())
    assert {"committer", "delivery-worker"} <= set(ready["loops"])
    assert all(loop["state"] in ("starting", "up") for loop in ready["loops"].values()), ready["loops"]
    assert head_revision() == _query(stack.database_url, "SELECT version_num FROM alembic_version")[0][0]

    case = _case(seed=51)
    assert client.post("/v1/messages", json=case).status_code == 202
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert 'gateway_messages_accepted_total{source="probation",type="case.registered"} 1.0' in lines
