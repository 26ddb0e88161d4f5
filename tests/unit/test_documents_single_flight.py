"""DocumentService on fakes: one upstream call per record key at a time, stored copies, persisted retry state."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
import pytest

from gateway.access import SecurityEvents
from gateway.documents import DocumentService, Outcome
from gateway.mapping import RetryPolicy
from gateway.observability import Metrics
from gateway.pipeline.accept import Accepter
from gateway.pipeline.exchange import OutboundExchange
from gateway.pipeline.ports import RecordLookup, RecordResult
from gateway.pipeline.routing import Router
from gateway.storage.documents import FlightRetry, RecordKey
from gateway.wire import WireRequest, WireResponse
from security.access import Principal
from security.pii import PiiCipher
from tests.fakes import (
    T0,
    FakeClock,
    FakeCommitter,
    FakeDocumentRows,
    FakeFlight,
    FakeSigner,
    FakeStore,
    FakeTransport,
    FakeVerifier,
    eventually,
)
from tests.unit.builders import IIN, MAPPINGS, instance, with_instances

KIND = "employment_status"  # МТСЗН's, valid for an hour
CASE = "35-2026-000001"
SYSTEM = Principal(client_id="probation-is", roles=frozenset({"system"}), via="signature")
FOUND = WireResponse(200, (("content-type", "application/json"),),
                     orjson.dumps({"found": True, "data": {"status": "registered"}}))
BUSY = WireResponse(503, body=b"busy")
POLICY = RetryPolicy(max_attempts=3, base_delay_s=5.0, max_delay_s=30.0, deadline_s=3600.0)


class Lookups:
    """A tiny LookupAdapter: the lookup as JSON out, {"found": ..., "data": ...} back."""

    counterpart = "mtszn"

    def encode_lookup(self, lookup: RecordLookup, **_: Any) -> WireRequest:
        return WireRequest("POST", "/lookups", (), orjson.dumps({"request_id": lookup.request_id,
                                                                 "record_kind": lookup.record_kind,
                                                                 "iin": lookup.iin}))

    def decode_lookup(self, response: WireResponse, *, lookup: RecordLookup, context: Any, **_: Any
                      ) -> RecordResult:
        doc = orjson.loads(response.body)
        return RecordResult(lookup.record_kind, doc["found"], doc.get("data", {}), context.received_at)

    def encode(self, *args: Any, **kwargs: Any) -> WireRequest:
        raise NotImplementedError

    def decode_response(self, *args: Any, **kwargs: Any) -> list:
        raise NotImplementedError

    def decode_callback(self, *args: Any, **kwargs: Any) -> list:
        raise NotImplementedError


class Parts:
    def __init__(self, *answers: Any, gate: asyncio.Event | None = None) -> None:
        self.clock = FakeClock()
        committer = FakeCommitter()
        self.store = FakeStore(committer)
        self.rows = FakeDocumentRows(committer)
        self.transport = FakeTransport({"mtszn": answers}, gate=gate)
        mappings = with_instances(MAPPINGS, instance("mtszn", retry=POLICY))
        accepter = Accepter(store=self.store, router=Router(mappings), clock=self.clock,
                            status_url=lambda mid: f"/v1/messages/{mid}")
        self.cipher = PiiCipher({"k1": b"k" * 32}, hash_key=b"h" * 32)
        self.service = DocumentService(
            store=self.store, documents=self.rows, mappings=mappings, adapters={"mtszn": Lookups()},
            exchange=OutboundExchange(transport=self.transport, clock=self.clock, signer=FakeSigner(),
                                      verifier=FakeVerifier()),
            accepter=accepter, cipher=self.cipher, clock=self.clock, metrics=Metrics(),
            events=SecurityEvents(store=self.store, clock=self.clock))  # type: ignore[arg-type]
        self.key = RecordKey(KIND, self.cipher.hash(IIN), "mtszn")

    async def request(self) -> Outcome:
        return await self.service.request(principal=SYSTEM, case_id=CASE, record_kind=KIND, iin=IIN,
                                          purpose="reintegration plan")

    def state(self, outcome: Outcome) -> str:
        return self.rows.requests[outcome.body["request_id"]]["state"]

    async def settled(self, *outcomes: Outcome) -> None:
        await eventually(lambda: all(self.state(o) != "pending" for o in outcomes), what="the requests to settle")


@pytest.mark.parametrize("concurrent", [2, 10])
async def test_concurrent_requests_for_one_record_make_one_upstream_call(concurrent: int) -> None:
    gate = asyncio.Event()
    parts = Parts(FOUND, gate=gate)
    outcomes = await asyncio.gather(*(parts.request() for _ in range(concurrent)))
    assert [o.status_code for o in outcomes] == [202] * concurrent
    await eventually(lambda: parts.transport.in_flight == 1, what="the upstream call to be under way")
    assert parts.transport.calls() == 1
    assert parts.rows.flights[parts.key].waiters == concurrent - 1

    gate.set()
    await parts.settled(*outcomes)
    assert parts.transport.calls() == 1
    assert parts.key not in parts.rows.flights
    for outcome in outcomes:
        body = await parts.service.get(principal=SYSTEM, request_id=outcome.body["request_id"])
        assert (body["state"], body["served_from"], body["record"]) == ("done", "upstream", {"status": "registered"})
    pushed = [m for m in parts.store.messages.values() if m["type"] == "document.ready"]
    assert len(pushed) == concurrent  # each requester is told, each through the Probation IS's deliveries
    assert all(d["instance"] == "probation" for d in parts.store.deliveries.values())


async def test_a_valid_stored_record_answers_without_an_upstream_call() -> None:
    parts = Parts(FOUND, FOUND)
    first = await parts.request()
    await parts.settled(first)
    assert parts.transport.calls() == 1

    parts.clock.advance(1800)
    hit = await parts.request()
    assert (hit.status_code, hit.body["state"], hit.body["served_from"]) == (200, "done", "store")
    assert hit.body["record"] == {"status": "registered"}
    assert parts.transport.calls() == 1
    assert parts.state(hit) == "done"
    assert len(parts.store.hops_of("read")) == 2  # the leader's requester and this one: every read is logged

    parts.clock.advance(1801)  # the copy expired: asked again
    miss = await parts.request()
    assert miss.status_code == 202
    await parts.settled(miss)
    assert parts.transport.calls() == 2


async def test_a_retryable_failure_then_success_keeps_the_retry_state_and_logs_both_lookups() -> None:
    parts = Parts(BUSY, FOUND)
    # Time passes to each retry's due time as the flight records it: the wait is over when computed.
    parts.rows.on_retry_later = lambda key, retry: parts.clock.set(retry.next_attempt_at)
    outcome = await parts.request()
    await parts.settled(outcome)
    assert parts.state(outcome) == "done"
    assert parts.transport.calls() == 2

    ((key, retry),) = parts.rows.retries
    assert key == parts.key
    assert (retry.attempts, retry.first_attempt_at) == (1, T0)
    assert T0 <= retry.next_attempt_at <= T0 + timedelta(seconds=POLICY.base_delay_s)

    first, second = parts.store.hops_of("lookup")
    assert (first["attempt"], first["result"], first["status_code"]) == (1, "failed", 503)
    assert first["error"].endswith(": counterpart answered 503")
    assert (second["attempt"], second["result"], second["status_code"]) == (2, "ok", 200)
    assert second["request_out_at"] == retry.next_attempt_at


def stale(parts: Parts, *, attempts: int) -> None:
    """A flight whose leader died after `attempts` lookups, and the request that waits for it."""
    created = T0 - timedelta(minutes=2)
    parts.rows.insert_requests(None, [{
        "request_id": "7d6c4e1a-0000-4000-8000-000000000001", "client_id": SYSTEM.client_id, "case_id": CASE,
        "record_kind": KIND, "subject": parts.key.subject, "iin": parts.cipher.encrypt(IIN, context="iin"),
        "purpose": "reintegration plan", "instance": "mtszn", "state": "pending", "created_at": created}])
    parts.rows.seed_flight(parts.key, FakeFlight(
        leader="p-dead:9b1e", lease_until=T0 - timedelta(seconds=1), started_at=created, attempts=attempts,
        first_attempt_at=created, next_attempt_at=T0 - timedelta(seconds=10)))


async def test_a_takeover_counts_on_from_the_stored_attempts() -> None:
    parts = Parts(BUSY, BUSY, BUSY)
    stale(parts, attempts=2)
    assert await parts.service.sweep() == 1
    request = parts.rows.requests["7d6c4e1a-0000-4000-8000-000000000001"]
    await eventually(lambda: request["state"] != "pending", what="the taken-over flight to land")
    assert parts.transport.calls() == 1  # attempt 3 of 3: the policy gives up, as the dead leader's would have
    (hop,) = parts.store.hops_of("lookup")
    assert hop["attempt"] == 3
    assert request["state"] == "failed"
    assert request["error"] == "counterpart answered 503; gave up after 3 attempts"
    assert parts.key not in parts.rows.flights


async def test_a_takeover_that_gets_an_answer_serves_the_waiting_request() -> None:
    parts = Parts(FOUND)
    stale(parts, attempts=1)
    assert await parts.service.sweep() == 1
    request = parts.rows.requests["7d6c4e1a-0000-4000-8000-000000000001"]
    await eventually(lambda: request["state"] != "pending", what="the taken-over flight to land")
    assert (request["state"], request["served_from"]) == ("done", "upstream")
    assert [h["attempt"] for h in parts.store.hops_of("lookup")] == [2]


async def test_a_request_that_takes_over_a_stale_flight_counts_on_from_the_stored_attempts() -> None:
    parts = Parts(BUSY, BUSY, BUSY)
    parts.rows.on_retry_later = lambda key, retry: parts.clock.set(retry.next_attempt_at)
    stale(parts, attempts=2)
    outcome = await parts.request()  # joins the stale flight before any sweep: it leads it now
    await parts.settled(outcome)
    assert parts.transport.calls() == 1
    assert [h["attempt"] for h in parts.store.hops_of("lookup")] == [3]


async def test_fake_rows_keep_retry_state_only_for_the_leader() -> None:
    """The fake's own contract, as gateway/storage/documents.py: only the flight's leader keeps retry state."""
    rows = FakeDocumentRows()
    key = RecordKey(KIND, "subject", "mtszn")
    joined = rows.join_flight(None, key, leader="a", now=T0, lease_until=T0 + timedelta(seconds=60))
    assert (joined.leader, joined.waiters) == ("a", 0)
    joined = rows.join_flight(None, key, leader="b", now=T0, lease_until=T0 + timedelta(seconds=60))
    assert (joined.leader, joined.waiters) == ("a", 1)
    assert not rows.retry_later(None, key, leader="b", retry=FlightRetry(1, T0, T0))
    assert rows.retry_later(None, key, leader="a", retry=FlightRetry(1, T0, T0))
    later = T0 + timedelta(seconds=61)
    joined = rows.join_flight(None, key, leader="c", now=later, lease_until=later + timedelta(seconds=60))
    assert (joined.leader, joined.waiters, joined.retry.attempts) == ("c", 2, 1)
    assert rows.flights[key].attempts == 1  # the retry state outlives its leader
    assert not rows.drop_flight(None, key, leader="a")
    assert rows.drop_flight(None, key, leader="c")
