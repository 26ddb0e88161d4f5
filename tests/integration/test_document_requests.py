"""Document requests and Idempotency-Key over real HTTP: one upstream call per record, shared while valid, pushed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from httpx_aiohttp import AiohttpTransport
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.clients import add_client
from gateway.config import ROOT
from gateway.samples import SampleCases
from gateway.storage.clients import ClientStore
from gateway.storage.db import create_engines
from gateway.storage.store import Store
from gateway.storage.tables import idempotency_keys
from security.client import SignatureAuth
from security.parties import ensure_party_key
from tests.harness import Stack, free_port, sim_config, sim_stats, wait_for

PROBLEM = "application/problem+json"
PROBLEM_BASE = "urn:probation-gateway:problem:"
KIND = "identity_document_status"  # at ЦОН (`con`, SOAP)
N_CONCURRENT = 500


# --- helpers ---------------------------------------------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    """The harness stack with the national counterparts that keep records: ЦОН, health, МТСЗН."""
    s = Stack(tmp_path, database_url, national=("con", "health", "mtszn"))
    try:
        yield s
    finally:
        s.close()


def _query(database_url: str, sql: str, **params: Any) -> list[tuple]:
    """One read query on the gateway's store, with an engine of our own (`:name` parameters)."""

    async def go() -> list[tuple]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in await conn.execute(text(sql), params)]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _execute(database_url: str, sql: str) -> None:
    async def go() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(go())


def _idempotency_rows(database_url: str) -> list[Any]:
    """The Idempotency-Key rows, typed (timestamps as datetimes on both stores)."""

    async def go() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                return list(await conn.execute(select(idempotency_keys)))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _count_where(database_url: str, table: str, condition: str) -> int:
    return _query(database_url, f"SELECT count(*) FROM {table} WHERE {condition}")[0][0]


def _count(database_url: str, table: str) -> int:
    return _query(database_url, f"SELECT count(*) FROM {table}")[0][0]


def _person(stack: Stack, seed: int) -> tuple[str, str]:
    """Register a sample case (over the API) and return its case id and the person's IIN."""
    case = SampleCases(seed=seed).case()[0]
    r = stack.client.post("/v1/messages", json=case)
    assert r.status_code == 202, r.text
    return case["case_id"], case["body"]["person"]["iin"]


def _ask(case_id: str, iin: str, kind: str = KIND, purpose: str = "проверка документов перед встречей") -> dict:
    return {"case_id": case_id, "record_kind": kind, "iin": iin, "purpose": purpose}


def _add_system_client(stack: Stack, client_id: str) -> SignatureAuth:
    """Register another system client with a key of its own (as `gateway clients add` does) and sign as it."""
    key = ensure_party_key(stack.keys_dir, client_id)

    async def go() -> None:
        engines = create_engines(stack.database_url)
        store = Store(engines)
        try:
            await add_client(clients=ClientStore(store), client_id=client_id, roles=["system"],
                             now=datetime.now(timezone.utc), public_key=key.certificate_pem())
        finally:
            await store.committer.stop()
            await engines.dispose()

    asyncio.run(go())
    return SignatureAuth(key.http_signer())


def _client(auth: httpx.Auth, connections: int) -> httpx.AsyncClient:
    """An httpx client over aiohttp's connector: httpcore's pool costs milliseconds of CPU per request at
    hundreds of connections (see gateway/pipeline/transport.py), which would starve the in-thread gateway."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(auth=auth, timeout=60, limits=limits, transport=AiohttpTransport(limits=limits))


def _post_all(urls: list[str], bodies: list[dict], *, auth: httpx.Auth) -> list[httpx.Response]:
    """POST every body at once (one connection each, all in flight together), to the URLs in turn."""

    async def go() -> list[httpx.Response]:
        async with _client(auth, len(bodies)) as client:
            return await asyncio.gather(*(client.post(f"{urls[i % len(urls)]}/v1/document-requests", json=b)
                                          for i, b in enumerate(bodies)))

    return asyncio.run(go())


def _settle(stack: Stack, responses: list[httpx.Response]) -> dict[str, dict]:
    """Each request's final view: a 200 as answered, a 202 polled (on the gateway that took it) until done."""
    final: dict[str, dict] = {}
    pending: dict[str, str] = {}
    for r in responses:
        assert r.status_code in (200, 202), r.text
        body = r.json()
        if r.status_code == 200:
            assert body["state"] == "done" and body["served_from"] == "store", body
            final[body["request_id"]] = body
        else:
            assert body["state"] == "pending" and r.headers["location"] == body["status_url"], body
            pending[body["request_id"]] = str(r.request.url).rsplit("/v1/", 1)[0]

    deadline = time.monotonic() + 45  # for all of them together: a stuck request fails the test, not slowly

    async def poll() -> None:
        async with _client(stack.auth, 64) as client:
            sem = asyncio.Semaphore(64)

            async def one(rid: str, base: str) -> None:
                while time.monotonic() < deadline:
                    async with sem:
                        r = await client.get(f"{base}/v1/document-requests/{rid}")
                    assert r.status_code == 200, r.text
                    if r.json()["state"] != "pending":
                        final[rid] = r.json()
                        return
                    await asyncio.sleep(0.1)
                raise AssertionError(f"document request {rid} still pending")

            await asyncio.gather(*(one(rid, base) for rid, base in pending.items()))

    asyncio.run(poll())
    return final


def _pushes(stack: Stack) -> dict[str, list[dict]]:
    """document.ready messages the Probation IS received, by request id."""
    out: dict[str, list[dict]] = {}
    for m in httpx.get(stack.probation.url + "/_sim/received", timeout=30).json():
        if m.get("type") == "document.ready":
            out.setdefault(m["body"]["request_id"], []).append(m)
    return out


def _wait_pushes(stack: Stack, request_ids: set[str], *, timeout: float = 45) -> dict[str, list[dict]]:
    return wait_for(lambda: (p := _pushes(stack)).keys() >= request_ids and p, timeout=timeout, interval=0.2,
                    what=f"document.ready for {len(request_ids)} requests at the Probation IS")


def _metrics(url: str) -> dict[str, float]:
    """The gateway's document metrics: `name{labels}` -> value."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("gateway_document_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _outcomes(urls: list[str], kind: str = KIND) -> dict[str, float]:
    """gateway_document_requests_total by outcome, summed over the gateways."""
    totals = {"hit": 0.0, "miss": 0.0, "coalesced": 0.0}
    for url in urls:
        for name, value in _metrics(url).items():
            for outcome in totals:
                if name == f'gateway_document_requests_total{{outcome="{outcome}",record_kind="{kind}"}}':
                    totals[outcome] += value
    return totals


def _lookups(stack: Stack, sim: str = "con") -> dict[str, list[float]]:
    """The simulator's upstream lookups: request id -> attempt times."""
    return sim_stats(stack.sims[sim])["attempts"]


def _assert_problem(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    doc = r.json()
    assert doc["type"] == PROBLEM_BASE + slug and doc["status"] == status, doc
    return doc


def _same_record(views: list[dict]) -> dict:
    """Every view carries the same stored record (one fetch); returns it."""
    first = views[0]
    for v in views:
        assert v["state"] == "done", v
        assert v["status"] == "found" and v["record"], v
        assert (v["record"], v["fetched_at"], v["valid_until"]) == \
            (first["record"], first["fetched_at"], first["valid_until"]), (v, first)
    return first


# --- 1. many requests, one upstream call -----------------------------------------------------------------------


@pytest.mark.slow
def test_500_concurrent_requests_for_one_record_make_one_upstream_call(stack: Stack) -> None:
    stack.start_gateway()
    case_id, iin = _person(stack, seed=501)
    # A slow ЦОН keeps the one call in the air while the 500 arrive, so most of them join it.
    sim_config(stack.sims["con"], latency_ms=500)

    responses = _post_all([stack.gateway_url], [_ask(case_id, iin)] * N_CONCURRENT, auth=stack.auth)

    final = _settle(stack, responses)
    assert len(final) == N_CONCURRENT  # 500 distinct requests
    record = _same_record(list(final.values()))
    assert record["record"]["document_type"] == "identity_card"
    assert len(_lookups(stack)) == 1 and sim_stats(stack.sims["con"])["requests"] == 1

    # Each request that waited gets its own document.ready; one answered from the store had the record already.
    waited = {r.json()["request_id"] for r in responses if r.status_code == 202}
    assert waited, "no request waited on the upstream call"
    pushes = _wait_pushes(stack, waited)
    assert set(pushes) == waited
    for rid in waited:
        (push,) = pushes[rid]
        assert push["case_id"] == case_id
        assert push["body"]["status"] == "found" and push["body"]["record"] == record["record"]
    assert all(final[rid]["served_from"] == "upstream" for rid in waited)

    outcomes = _outcomes([stack.gateway_url])
    assert outcomes["miss"] == 1
    assert outcomes["coalesced"] + outcomes["hit"] == N_CONCURRENT - 1
    assert outcomes["hit"] == sum(r.status_code == 200 for r in responses)
    m = _metrics(stack.gateway_url)
    upstream = f'gateway_document_upstream_calls_total{{counterpart_instance="con",record_kind="{KIND}",result="ok"}}'
    assert m[upstream] == 1
    assert m[f'gateway_document_coalesced_waiters_total{{record_kind="{KIND}"}}'] == outcomes["coalesced"]
    assert m["gateway_document_hit_ratio"] == pytest.approx(outcomes["hit"] / N_CONCURRENT)
    assert _count(stack.database_url, "records") == 1


@pytest.mark.slow
@pytest.mark.postgres
def test_two_gateway_processes_on_postgres_make_one_upstream_call(tmp_path: Path, postgres_url: str) -> None:
    stack = Stack(tmp_path, postgres_url, national=("con", "health", "mtszn"))
    procs: list[subprocess.Popen] = []
    try:
        stack.gateway_sock.close()  # the first child listens on the harness's port (see test_crash_and_scale)
        urls = [stack.gateway_url, f"http://127.0.0.1:{free_port()}"]
        for url in urls:
            procs.append(stack.spawn_gateway(int(url.rsplit(":", 1)[1])))
        case_id, iin = _person(stack, seed=502)
        sim_config(stack.sims["con"], latency_ms=500)

        # Alternately to the two processes: each one's requests join the one flight, whichever process leads it.
        responses = _post_all(urls, [_ask(case_id, iin)] * N_CONCURRENT, auth=stack.auth)

        final = _settle(stack, responses)
        assert len(final) == N_CONCURRENT
        _same_record(list(final.values()))
        assert sim_stats(stack.sims["con"])["requests"] == 1
        by_process = [_outcomes([u]) for u in urls]
        assert sum(o["miss"] for o in by_process) == 1
        assert sum(sum(o.values()) for o in by_process) == N_CONCURRENT
        assert all(sum(o.values()) == N_CONCURRENT // 2 for o in by_process), by_process
        waited = {r.json()["request_id"] for r in responses if r.status_code == 202}
        pushes = _wait_pushes(stack, waited)
        assert set(pushes) == waited and all(len(p) == 1 for p in pushes.values())
        assert _count(postgres_url, "records") == 1
        assert _count(postgres_url, "flights") == 0  # the landing closed the flight
    finally:
        for p in procs:  # before the simulators go away
            p.kill()
            p.wait(timeout=15)
        stack.close()


# --- 2. validity -----------------------------------------------------------------------------------------------

VALIDITY_S = 3


def test_stored_copy_is_served_inside_its_validity_and_fetched_once_after(stack: Stack, tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "gateway" / "mappings", mappings)
    (mappings / "counterparts.yaml").unlink()  # the stack's counterparts file is used
    doc = yaml.safe_load((mappings / "document-requests.yaml").read_text(encoding="utf-8"))
    doc["records"][KIND]["validity_s"] = VALIDITY_S
    (mappings / "document-requests.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    stack.start_gateway(mappings_dir=mappings)
    case_id, iin = _person(stack, seed=503)

    first = _settle(stack, _post_all([stack.gateway_url], [_ask(case_id, iin)] * 10, auth=stack.auth))
    fetched = _same_record(list(first.values()))
    assert len(_lookups(stack)) == 1

    # Inside the window: the stored copy, no upstream call.
    r = stack.client.post("/v1/document-requests", json=_ask(case_id, iin))
    assert r.status_code == 200 and r.json()["served_from"] == "store", r.text
    assert r.json()["fetched_at"] == fetched["fetched_at"]
    assert len(_lookups(stack)) == 1

    # After it: ten requests at once make exactly one new call, and its copy is served again from then on.
    valid_until = datetime.fromisoformat(fetched["valid_until"])
    wait_for(lambda: datetime.now(timezone.utc) > valid_until, timeout=VALIDITY_S + 5, what="the copy to expire")
    again = _settle(stack, _post_all([stack.gateway_url], [_ask(case_id, iin)] * 10, auth=stack.auth))
    refetched = _same_record(list(again.values()))
    assert refetched["fetched_at"] > fetched["fetched_at"]
    assert len(_lookups(stack)) == 2 and sim_stats(stack.sims["con"])["requests"] == 2
    r = stack.client.post("/v1/document-requests", json=_ask(case_id, iin))
    assert r.status_code == 200 and r.json()["fetched_at"] == refetched["fetched_at"], r.text
    assert len(_lookups(stack)) == 2
    assert _count(stack.database_url, "records") == 1  # the one copy was replaced


# --- 3. upstream failures --------------------------------------------------------------------------------------


def test_failed_upstream_call_stores_nothing_and_the_next_request_asks_again(stack: Stack) -> None:
    stack.start_gateway()
    case_id, iin = _person(stack, seed=504)
    con = stack.sims["con"]
    max_attempts = stack.retry["max_attempts"]

    # 1. ЦОН answers 503 for longer than the retry policy waits: every waiting request fails, nothing is kept.
    sim_config(con, storm_count=max_attempts * 3, storm_status=503)
    failed = _settle(stack, _post_all([stack.gateway_url], [_ask(case_id, iin)] * 5, auth=stack.auth))
    assert {v["state"] for v in failed.values()} == {"failed"}
    assert all("503" in v["reason"] for v in failed.values()), failed
    assert all("record" not in v or v["record"] is None for v in failed.values())
    (lookup,) = _lookups(stack).values()
    assert len(lookup) == max_attempts  # one lookup, retried by the policy, then given up
    assert _count(stack.database_url, "records") == 0
    pushes = _wait_pushes(stack, set(failed))
    for rid in failed:
        (push,) = pushes[rid]
        assert push["body"]["status"] == "failed" and "503" in push["body"]["reason"], push
        assert push["body"].get("record") is None

    # 2. The next request asks again; 503 twice then 200 is retried by the policy and stored once.
    sim_config(con, per_message=[503, 503])
    r = stack.client.post("/v1/document-requests", json=_ask(case_id, iin))
    assert r.status_code == 202, r.text  # the failure left no copy to serve
    (done,) = _settle(stack, [r]).values()
    assert done["state"] == "done" and done["served_from"] == "upstream" and done["status"] == "found", done
    lookups = _lookups(stack)
    assert len(lookups) == 2
    assert sorted(len(t) for t in lookups.values()) == [3, max_attempts]
    assert _count(stack.database_url, "records") == 1
    assert _wait_pushes(stack, {done["request_id"]})[done["request_id"]][0]["body"]["status"] == "found"
    # The failed requests stay failed: a later success does not rewrite them.
    assert {stack.client.get(f"/v1/document-requests/{rid}").json()["state"] for rid in failed} == {"failed"}

    # 3. A refusal (400) is not retried: one attempt, nothing stored for that record.
    sim_config(con, per_message=[400])
    r = stack.client.post("/v1/document-requests", json=_ask(case_id, iin, "registration_status"))
    assert r.status_code == 202, r.text
    (refused,) = _settle(stack, [r]).values()
    assert refused["state"] == "failed" and "400" in refused["reason"], refused
    assert len(_lookups(stack)) == 3 and sim_stats(con)["requests"] == max_attempts + 3 + 1
    assert _query(stack.database_url, "SELECT count(*) FROM records WHERE record_kind = 'registration_status'") \
        == [(0,)]
    assert _wait_pushes(stack, {refused["request_id"]})[refused["request_id"]][0]["body"]["status"] == "failed"
    assert _count(stack.database_url, "flights") == 0


def test_requests_arriving_while_flights_fail_each_get_an_answer(stack: Stack) -> None:
    # An hour's lease: a request left behind by a landed flight would wait for the sweeper, not be answered.
    stack.start_gateway(document_lease_s=3600)
    case_id, iin = _person(stack, seed=511)
    con = stack.sims["con"]
    sim_config(con, per_message=[400])  # every lookup refused on its first (and only) attempt

    async def keep_asking() -> list[httpx.Response]:
        # Twenty clients, each asking again as soon as it is answered: requests arrive while each failed flight
        # lands, and the first of them after a landing starts the next flight.
        out: list[httpx.Response] = []
        async with _client(stack.auth, 20) as client:
            async def one() -> None:
                for _ in range(10):
                    out.append(await client.post(f"{stack.gateway_url}/v1/document-requests",
                                                 json=_ask(case_id, iin)))

            await asyncio.gather(*(one() for _ in range(20)))
        return out

    responses = asyncio.run(keep_asking())
    assert {r.status_code for r in responses} == {202}  # a failure leaves nothing to serve
    final = _settle(stack, responses)
    assert len(final) == 200 and {v["state"] for v in final.values()} == {"failed"}
    assert all("400" in v["reason"] for v in final.values())
    lookups = _lookups(stack)
    assert 1 < len(lookups) <= 200 and all(len(t) == 1 for t in lookups.values())
    pushes = _wait_pushes(stack, set(final))
    assert all(len(pushes[rid]) == 1 and pushes[rid][0]["body"]["status"] == "failed" for rid in final)
    assert _count(stack.database_url, "records") == 0
    assert _count(stack.database_url, "flights") == 0


# --- 4. a requester that goes away -----------------------------------------------------------------------------


def _send_and_hang_up(stack: Stack, body: dict) -> None:
    """Send one signed POST on a raw socket and close it without reading the answer."""
    request = next(stack.auth.sync_auth_flow(httpx.Request("POST", f"{stack.gateway_url}/v1/document-requests",
                                                           json=body)))
    head = "POST /v1/document-requests HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    with socket.create_connection(("127.0.0.1", stack.gateway_port)) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + request.content)


def test_the_others_get_the_result_when_the_first_requester_hangs_up(stack: Stack) -> None:
    stack.start_gateway()
    case_id, iin = _person(stack, seed=505)
    con = stack.sims["con"]
    sim_config(con, latency_ms=1500)

    _send_and_hang_up(stack, _ask(case_id, iin, purpose="the requester that hangs up"))
    # Its request started the one upstream call (nobody else has asked yet) and is gone before the answer.
    wait_for(lambda: sim_stats(con)["requests"] == 1, what="the departed requester's upstream call")
    others = _post_all([stack.gateway_url], [_ask(case_id, iin)] * 20, auth=stack.auth)
    final = _settle(stack, others)
    record = _same_record(list(final.values()))
    assert sim_stats(con)["requests"] == 1

    rows = _query(stack.database_url, "SELECT request_id, state, purpose FROM document_requests")
    departed = [r for r in rows if r[2] == "the requester that hangs up"]
    assert len(departed) == 1 and departed[0][1] == "done", rows
    waited = {r.json()["request_id"] for r in others if r.status_code == 202} | {departed[0][0]}
    pushes = _wait_pushes(stack, waited)
    assert all(p[0]["body"]["record"] == record["record"] for p in pushes.values())
    assert _outcomes([stack.gateway_url])["miss"] == 1


# --- 5. who may ask and who may read ---------------------------------------------------------------------------


def test_only_the_requester_reads_its_request_and_only_readers_may_ask(stack: Stack) -> None:
    other = _add_system_client(stack, "second-system")
    stack.start_gateway()
    case_id, iin = _person(stack, seed=506)
    r = stack.client.post("/v1/document-requests", json=_ask(case_id, iin))
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    (mine,) = _settle(stack, [r]).values()
    assert mine["record"]

    with httpx.Client(base_url=stack.gateway_url, auth=other, timeout=30) as second:
        # Another system client: the request does not exist for it (no hint that it does).
        missing = second.get(f"/v1/document-requests/{rid}")
        _assert_problem(missing, 404, "not-found")
        assert iin not in missing.text and "record" not in missing.json()
        # It may ask for the same record itself (a hit from the store), under its own request id.
        own = second.post("/v1/document-requests", json=_ask(case_id, iin))
        assert own.status_code == 200 and own.json()["request_id"] != rid, own.text
        assert second.get(f"/v1/document-requests/{own.json()['request_id']}").status_code == 200
        assert stack.client.get(f"/v1/document-requests/{own.json()['request_id']}").status_code == 404

    before = _count(stack.database_url, "document_requests")
    # An auditor (bearer token) is not a reader of records: refused before anything is stored or asked.
    _assert_problem(stack.auditor.post("/v1/document-requests", json=_ask(case_id, iin)), 403, "forbidden")
    _assert_problem(stack.auditor.get(f"/v1/document-requests/{rid}"), 403, "forbidden")
    # Unsigned: not even looked at.
    assert httpx.post(f"{stack.gateway_url}/v1/document-requests", json=_ask(case_id, iin)).status_code == 401
    assert _count(stack.database_url, "document_requests") == before
    assert sim_stats(stack.sims["con"])["requests"] == 1


# --- 6. the exchange log -----------------------------------------------------------------------------------------


def test_every_read_of_a_record_is_in_the_exchange_log(stack: Stack) -> None:
    other = _add_system_client(stack, "second-system")
    stack.start_gateway()
    case_id, iin = _person(stack, seed=507)
    sim_config(stack.sims["con"], latency_ms=300)
    expected: dict[str, tuple[str, int]] = {}  # request id -> (client, reads)

    # Requests waiting on one call are each read once when the record lands (it goes to the Probation IS);
    # one that came after the landing is read once from the store.
    waiting = _post_all([stack.gateway_url], [_ask(case_id, iin)] * 3, auth=stack.auth)
    assert {r.status_code for r in waiting} <= {200, 202}
    _wait_pushes(stack, {r.json()["request_id"] for r in waiting if r.status_code == 202})
    # Each GET that returns the record is a read of its own.
    for r in waiting:
        rid = r.json()["request_id"]
        views = [stack.client.get(f"/v1/document-requests/{rid}").json() for _ in range(2)]
        assert [v["state"] for v in views] == ["done", "done"] and all(v["record"] for v in views)
        expected[rid] = ("probation-is", 1 + 2)
    # Hits from the store, by the system client and by a second one; a refused GET reads nothing.
    hit = stack.client.post("/v1/document-requests", json=_ask(case_id, iin))
    with httpx.Client(base_url=stack.gateway_url, auth=other, timeout=30) as second:
        other_hit = second.post("/v1/document-requests", json=_ask(case_id, iin))
        assert second.get(f"/v1/document-requests/{hit.json()['request_id']}").status_code == 404
    assert hit.status_code == other_hit.status_code == 200
    expected[hit.json()["request_id"]] = ("probation-is", 1)
    expected[other_hit.json()["request_id"]] = ("second-system", 1)

    rows = _query(stack.database_url, "SELECT peer, error, status_code, result FROM exchanges WHERE hop = 'read'")
    (record_id,) = _query(stack.database_url, "SELECT id FROM records")[0]
    got: dict[str, list[str]] = {}
    for peer, error, status, result in rows:
        assert status == 200 and result == "served"
        assert iin not in error  # the log names the request and the record, never the person
        assert error.endswith(f"{KIND} record {record_id}"), error
        rid = error.split("document request ", 1)[1].split(":", 1)[0]
        got.setdefault(rid, []).append(peer)
    assert {rid: (peers[0], len(peers)) for rid, peers in got.items()} == expected
    assert all(len(set(peers)) == 1 for peers in got.values())


# --- 7. Idempotency-Key ------------------------------------------------------------------------------------------


def _idem(key: str | bytes) -> dict[str, Any]:
    return {"Idempotency-Key": key}


def _replayed(r: httpx.Response) -> bool:
    return r.headers.get("idempotent-replayed") == "true"


def _concurrent_duplicates(url: str, path: str, body: dict, key: str, auth: httpx.Auth, n: int = 12
                           ) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with _client(auth, n) as client:
            return await asyncio.gather(*(client.post(f"{url}{path}", json=body, headers=_idem(key))
                                          for _ in range(n)))

    return asyncio.run(go())


def test_idempotency_key_replays_refuses_and_scopes_per_client(stack: Stack) -> None:
    other = _add_system_client(stack, "second-system")
    doc = yaml.safe_load(stack.counterparts.read_text(encoding="utf-8"))
    for inst in doc["instances"]:
        inst["enabled"] = inst["name"] != "mtszn"
    stack.counterparts.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    stack.start_gateway()
    case_id, iin = _person(stack, seed=508)
    samples = SampleCases(seed=509)
    db = stack.database_url
    second = httpx.Client(base_url=stack.gateway_url, auth=other, timeout=30)
    try:
        # --- POST /v1/messages -----------------------------------------------------------------------------
        message, other_message = samples.case()[0], samples.case()[0]
        first = stack.client.post("/v1/messages", json=message, headers=_idem("msg-1"))
        assert first.status_code == 202 and not _replayed(first), first.text
        # Same key, same body: the stored answer, byte for byte.
        again = stack.client.post("/v1/messages", json=message, headers=_idem("msg-1"))
        assert _replayed(again) and again.status_code == 202 and again.content == first.content
        assert [again.headers[h] for h in ("location", "content-type")] == \
            [first.headers[h] for h in ("location", "content-type")]
        # Same key, other body: refused, and the other message is not stored.
        _assert_problem(stack.client.post("/v1/messages", json=other_message, headers=_idem("msg-1")), 422,
                        "idempotency-key-reused")
        assert _query(db, "SELECT count(*) FROM messages WHERE message_id = :m", m=other_message["message_id"]) \
            == [(0,)]
        # The same key from another client is another key: its message is accepted.
        theirs = second.post("/v1/messages", json=other_message, headers=_idem("msg-1"))
        assert theirs.status_code == 202 and not _replayed(theirs), theirs.text
        assert theirs.json()["message_id"] == other_message["message_id"]
        # Without a key: the usual behaviour (the message id makes a resend safe), never a replay header.
        plain = [stack.client.post("/v1/messages", json=message) for _ in range(2)]
        assert [p.status_code for p in plain] == [202, 202] and not any(_replayed(p) for p in plain)
        # A concurrent duplicate while the first is in flight (its commit not yet answered) is told to wait.
        fresh = samples.case()[0]
        dup = _concurrent_duplicates(stack.gateway_url, "/v1/messages", fresh, "msg-2", stack.auth)
        _check_in_flight(dup)
        assert _query(db, "SELECT count(*) FROM messages WHERE message_id = :m", m=fresh["message_id"]) == [(1,)]

        # --- POST /v1/document-requests -----------------------------------------------------------------------
        ask = _ask(case_id, iin)
        n0 = _count(db, "document_requests")
        first = stack.client.post("/v1/document-requests", json=ask, headers=_idem("doc-1"))
        assert first.status_code == 202 and not _replayed(first), first.text
        again = stack.client.post("/v1/document-requests", json=ask, headers=_idem("doc-1"))
        assert _replayed(again) and again.status_code == 202 and again.content == first.content
        assert [again.headers[h] for h in ("location", "retry-after", "content-type")] == \
            [first.headers[h] for h in ("location", "retry-after", "content-type")]
        assert _count(db, "document_requests") == n0 + 1  # the replay made no request
        _settle(stack, [first])
        # Even once the record is stored, the key still answers what it answered first (202, pending).
        later = stack.client.post("/v1/document-requests", json=ask, headers=_idem("doc-1"))
        assert _replayed(later) and later.status_code == 202 and later.content == first.content
        _assert_problem(stack.client.post("/v1/document-requests", json=_ask(case_id, iin, purpose="другое"),
                                          headers=_idem("doc-1")), 422, "idempotency-key-reused")
        assert _count(db, "document_requests") == n0 + 1
        # Another client, same key and body: its own request (served from the store), not the first one's.
        theirs = second.post("/v1/document-requests", json=ask, headers=_idem("doc-1"))
        assert theirs.status_code == 200 and not _replayed(theirs), theirs.text
        assert theirs.json()["request_id"] != first.json()["request_id"]
        # No key: each POST is a request of its own.
        plain = [stack.client.post("/v1/document-requests", json=ask) for _ in range(2)]
        assert [p.status_code for p in plain] == [200, 200] and not any(_replayed(p) for p in plain)
        assert plain[0].json()["request_id"] != plain[1].json()["request_id"]
        assert _count(db, "document_requests") == n0 + 4
        dup = _concurrent_duplicates(stack.gateway_url, "/v1/document-requests", ask, "doc-2", stack.auth)
        _check_in_flight(dup)
        assert _count(db, "document_requests") == n0 + 5

        # A 5xx is not kept: the same key is tried afresh (the МТСЗН instance is disabled for this test).
        unavailable = _ask(case_id, iin, "employment_status")
        for _ in range(2):
            r = stack.client.post("/v1/document-requests", json=unavailable, headers=_idem("doc-503"))
            _assert_problem(r, 503, "no-instance")
            assert not _replayed(r)
        kept = _query(db, "SELECT key FROM idempotency_keys WHERE client_id = 'probation-is' ORDER BY key")
        assert kept == [("doc-1",), ("doc-2",), ("msg-1",), ("msg-2",)]
        # Kept at least 24 h.
        assert all(row.expires_at - row.created_at >= timedelta(hours=24) for row in _idempotency_rows(db))

        # --- a malformed key is refused before anything is done --------------------------------------------------
        stored = {t: _count(db, t) for t in ("document_requests", "messages", "idempotency_keys")}
        for path, body in (("/v1/document-requests", ask), ("/v1/messages", samples.case()[0])):
            for bad in ("", "k" * 256, b"caf\xc3\xa9", "tab\there"):
                _assert_problem(stack.client.post(path, json=body, headers=_idem(bad)), 400,
                                "invalid-idempotency-key")
            two = httpx.Headers([("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
            _assert_problem(stack.client.post(path, json=body, headers=two), 400, "invalid-idempotency-key")
        assert {t: _count(db, t) for t in stored} == stored
    finally:
        second.close()


def _check_in_flight(responses: list[httpx.Response]) -> None:
    """One original answer; each duplicate either waited (409) or came after it and got its replay."""
    originals = [r for r in responses if r.status_code < 300 and not _replayed(r)]
    assert len(originals) == 1, [(r.status_code, r.headers.get("idempotent-replayed")) for r in responses]
    busy = [r for r in responses if r.status_code == 409]
    for r in busy:
        _assert_problem(r, 409, "idempotency-key-in-flight")
        assert r.headers["retry-after"] == "1"
    for r in responses:
        if _replayed(r):
            assert (r.status_code, r.content) == (originals[0].status_code, originals[0].content)
    assert len(originals) + len(busy) + sum(map(_replayed, responses)) == len(responses)
    assert busy, "no duplicate arrived while the first was in flight"


# --- 8. bad input ------------------------------------------------------------------------------------------------


def test_bad_document_requests_are_refused_and_store_nothing(stack: Stack) -> None:
    stack.start_gateway()
    case_id, iin = _person(stack, seed=510)
    bad_check = iin[:11] + str((int(iin[11]) + 1) % 10)
    good = _ask(case_id, iin)
    cases = {
        "unknown record kind": (good | {"record_kind": "criminal_record"}, "/record_kind"),
        "IIN check digit": (good | {"iin": bad_check}, "/iin"),
        "IIN too short": (good | {"iin": iin[:11]}, "/iin"),
        "missing purpose": ({k: v for k, v in good.items() if k != "purpose"}, "/purpose"),
        "empty purpose": (good | {"purpose": ""}, "/purpose"),
        "extra field": (good | {"priority": "urgent"}, "/priority"),
        "missing case": ({k: v for k, v in good.items() if k != "case_id"}, "/case_id"),
    }
    before = {t: _count(stack.database_url, t) for t in ("document_requests", "records", "flights")}
    for what, (body, pointer) in cases.items():
        r = stack.client.post("/v1/document-requests", json=body)
        doc = _assert_problem(r, 422, "invalid-message")
        assert any(e["pointer"].endswith(pointer) for e in doc["errors"]), (what, doc)
        assert iin not in r.text and bad_check not in r.text, what  # personal data is never echoed
    assert {t: _count(stack.database_url, t) for t in before} == before
    assert sim_stats(stack.sims["con"])["requests"] == 0


def test_a_flight_that_lost_its_lease_does_not_overwrite_the_record(stack: Stack) -> None:
    # A slow upstream call keeps its flight while its process lives (the sweeper renews the lease). Here the lease
    # is made to look like that of a dead process while ЦОН takes 2.5 s: a second flight takes the key over. Only
    # the flight's owner stores the record and answers the requests, so a record never changes while it is valid
    # (every process may serve its copy until it expires).
    stack.start_gateway(document_lease_s=1, document_sweep_interval_s=0.3)
    case_id, iin = _person(stack, seed=909)
    con = stack.sims["con"]
    sim_config(con, latency_ms=2500)
    first = _post_all([stack.gateway_url], [_ask(case_id, iin)], auth=stack.auth)
    time.sleep(1.2)  # several sweeps: a live flight is renewed, not taken over
    assert sim_stats(con)["requests"] == 1
    _execute(stack.database_url, "UPDATE flights SET leader = 'p-gone:0'")  # no longer renewed: lapses in 1 s
    final = _settle(stack, first)
    answered = _same_record(list(final.values()))
    assert sim_stats(con)["requests"] == 2  # the first flight's call and the one that took over
    wait_for(lambda: _count_where(stack.database_url, "exchange_log", "kind = 'lookup'") == 2,
             what="both upstream calls in the exchange log, the stale one's too")
    time.sleep(1.5)  # past both landings, whichever order they came in
    again = _post_all([stack.gateway_url], [_ask(case_id, iin)], auth=stack.auth)[0]
    assert again.status_code == 200, again.text
    # What the requester was given is what the store still serves: same fetch, same validity.
    assert (again.json()["fetched_at"], again.json()["valid_until"]) == (answered["fetched_at"],
                                                                          answered["valid_until"])
    assert sim_stats(con)["requests"] == 2
