"""Document requests: a stored copy while valid, one upstream call per record at a time, results pushed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

import orjson

from gateway.access import Forbidden, SecurityEvents
from gateway.canonical.errors import GatewayError, NotFound
from gateway.canonical.messages import DocumentReady
from gateway.loops import Loop
from gateway.mapping import Instance, Mappings
from gateway.observability import Metrics
from gateway.pipeline.accept import Accepter, Incoming
from gateway.pipeline.exchange import OutboundExchange
from gateway.pipeline.ports import (
    DecodeContext,
    EncodeContext,
    LookupAdapter,
    RecordLookup,
    RecordResult,
    Tx,
    WireRequest,
    WireResponse,
    WriteQueue,
)
from gateway.pipeline.retry import RetryDecider
from gateway.pipeline.routing import Router
from gateway.storage.documents import FlightJoin, FlightRetry, RecordKey, StaleFlight
from gateway.storage.hops import action_row, hop_row
from gateway.wire import Clock
from security.access import Principal
from security.pii import PiiCipher

log = logging.getLogger("gateway.documents")


VALID_CACHE_SIZE = 10_000


class NoInstance(GatewayError):
    slug = "no-instance"
    status = 503
    title = "No counterpart instance can answer this request"


Key = RecordKey  # a record is keyed by kind, the IIN's keyed hash and the instance that answers


class HopWriter(Protocol):
    """Where the flow writes: the group commit, and hop rows into the operational table and the exchange log."""

    committer: WriteQueue

    def insert_exchanges(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...

    async def record_hop(self, row: dict[str, Any]) -> None: ...


class DocumentRows(Protocol):
    """The flow's rows (gateway.storage.documents.DocumentStore): requests, records, and flights."""

    async def valid_record(self, key: Key, now: datetime) -> Any: ...
    async def request_with_record(self, request_id: str) -> tuple[Any, Any]: ...
    async def stale_flights(self, now: datetime) -> list[StaleFlight]: ...
    def insert_requests(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...
    def valid_record_in(self, tx: Tx, key: Key, now: datetime) -> Any: ...
    def join_flight(self, tx: Tx, key: Key, *, leader: str, now: datetime, lease_until: datetime
                    ) -> FlightJoin: ...
    def drop_flight(self, tx: Tx, key: Key, *, leader: str) -> bool: ...
    def mark_served(self, tx: Tx, request_id: str, *, record_id: int, now: datetime) -> None: ...
    def put_record(self, tx: Tx, key: Key, values: dict[str, Any]) -> int: ...
    def resolve_waiting(self, tx: Tx, key: Key, *, state: str, record_id: int | None, now: datetime,
                        error: str | None) -> list[Any]: ...
    def renew(self, tx: Tx, key: Key, *, leader: str, until: datetime) -> None: ...
    def retry_later(self, tx: Tx, key: Key, *, leader: str, retry: FlightRetry) -> bool: ...
    def take_over(self, tx: Tx, key: Key, *, old: str, new: str, now: datetime, lease_until: datetime) -> Any: ...


@dataclass
class Outcome:
    """What the API answers: 200 with the record, or 202 while it is being fetched."""

    status_code: int
    body: dict[str, Any]


@dataclass
class _Join:
    request: dict[str, Any]
    leader: str
    record: Any = None  # a valid stored record found inside the joining transaction
    led: bool = False
    joined: bool = False
    retry: FlightRetry = FlightRetry()  # a flight taken over from a leader that died: its retries so far


@dataclass
class _Landing:
    key: Key
    leader: str
    result: RecordResult | None
    error: str | None
    validity_s: float
    now: datetime
    exchanges: list[dict[str, Any]] = field(default_factory=list)


class DocumentService:
    """POST /v1/document-requests and GET /v1/document-requests/{id}; the flights run as background tasks."""

    def __init__(self, *, store: HopWriter, documents: DocumentRows, mappings: Mappings, adapters: dict[str, Any],
                 exchange: OutboundExchange, accepter: Accepter, cipher: PiiCipher, clock: Clock, metrics: Metrics,
                 events: SecurityEvents, lease_s: float = 60.0, sweep_interval_s: float = 5.0,
                 status_url: Callable[[str], str] | None = None) -> None:
        self.store = store
        self.documents = documents
        self.status_url = status_url or (lambda request_id: f"/v1/document-requests/{request_id}")
        self.mappings = mappings
        self.adapters = adapters
        self.exchange = exchange
        self.accepter = accepter
        self.cipher = cipher
        self.clock = clock
        self.metrics = metrics
        self.events = events
        self.lease = timedelta(seconds=lease_s)
        self.sweep_interval_s = sweep_interval_s
        self.router = Router(mappings)
        self.process = f"p-{uuid.uuid4().hex[:12]}"
        self._flying: dict[Key, tuple[asyncio.Task, str]] = {}  # this process's flights: task, flight-row leader
        self.loop = Loop("document-sweeper", self._step, interval_s=sweep_interval_s,
                         initial_delay_s=sweep_interval_s)
        self._served = 0
        self._hits = 0
        # Valid records this process has read: a stored record never changes while valid, and a newer one is only
        # fetched after it expires, so a copy here answers exactly as the store would until its expires_at.
        self._valid: dict[Key, Any] = {}

    def reconfigure(self, mappings: Mappings) -> None:
        """A live counterpart change: requests from now on route by it; flights under way keep their instance."""
        self.mappings = mappings
        self.router = Router(mappings)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        # A flight cut short keeps its lease; another process (or this one restarted) takes it over.
        tasks = [task for task, _ in self._flying.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- requests ------------------------------------------------------------------------------

    def _instance(self, counterpart: str) -> Instance:
        route = self.router.pick(counterpart, None)
        inst = self.mappings.instance(route.instance) if route.instance else None
        if inst is None or not inst.enabled:
            raise NoInstance(route.reason or f"the {counterpart} instance is disabled")
        return inst

    async def request(self, *, principal: Principal, case_id: str, record_kind: str, iin: str,
                      purpose: str) -> Outcome:
        kind = self.mappings.documents.records.get(record_kind)  # type: ignore[call-overload]
        if kind is None:
            raise NotFound(f"no document kind {record_kind!r} is configured")
        if not principal.has_any(kind.readers):
            raise Forbidden(f"{principal.client_id} may not receive {record_kind} records")
        inst = self._instance(kind.counterpart)
        key = Key(record_kind, self.cipher.hash(iin), inst.name)
        now = self.clock()
        request = {
            "request_id": str(uuid.uuid4()), "client_id": principal.client_id, "case_id": case_id,
            "record_kind": record_kind, "subject": key.subject, "iin": self.cipher.encrypt(iin, context="iin"),
            "purpose": purpose, "instance": inst.name, "state": "pending", "record_id": None, "served_from": None,
            "created_at": now, "completed_at": None, "error": None,
        }
        record = await self._valid_record(key, now)
        if record is not None:
            # The cheap path: one write (the request, done, and the read in the exchange log) and no upstream call.
            await self.store.committer.submit(self._served_from_store, (request, record))
            return self._hit(request, record)
        join = await self.store.committer.submit(self._join, _Join(request, leader=f"{self.process}:{uuid.uuid4()}"))
        if join.record is not None:
            return self._hit(request, join.record)
        self._count(record_kind, "miss" if join.led else "coalesced")
        if join.joined:
            self.metrics.document_waiters.labels(record_kind).inc()
        if join.led:
            self._launch(key, leader=join.leader, iin=iin, purpose=purpose, retry=join.retry)
        return Outcome(202, self._pending_body(request))

    def _hit(self, request: dict[str, Any], record: Any) -> Outcome:
        self._count(request["record_kind"], "hit")
        body = self._pending_body(request) | {"state": "done", "served_from": "store", **self._record_view(record)}
        return Outcome(200, body)

    def _count(self, record_kind: str, outcome: str) -> None:
        self.metrics.document_requests.labels(record_kind, outcome).inc()
        self._served += 1
        self._hits += outcome == "hit"
        self.metrics.document_hit_ratio.set(self._hits / self._served)

    def _pending_body(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"request_id": request["request_id"], "case_id": request["case_id"],
                "record_kind": request["record_kind"], "instance": request["instance"], "state": "pending",
                "status_url": self.status_url(request["request_id"]),
                "created_at": request["created_at"].isoformat()}

    def _record_view(self, record: Any) -> dict[str, Any]:
        data = orjson.loads(self.cipher.decrypt(record.data, context="record")) if record.data else None
        return {"status": record.status, "record": data,
                "as_of": record.as_of.isoformat() if record.as_of else None,
                "fetched_at": record.fetched_at.isoformat(), "valid_until": record.expires_at.isoformat()}

    async def _valid_record(self, key: Key, now: datetime) -> Any:
        known = self._valid.get(key)
        if known is not None:
            if known.expires_at > now:
                return known
            del self._valid[key]
        record = await self.documents.valid_record(key, now)
        if record is not None:
            if len(self._valid) >= VALID_CACHE_SIZE:
                self._valid.pop(next(iter(self._valid)))  # the oldest entry
            self._valid[key] = record
        return record

    def _read_event(self, request: dict[str, Any], record_id: int, now: datetime) -> dict[str, Any]:
        # Every read of a record, by whom and for which request; the record itself is not copied here.
        return action_row(
            hop="read", peer=request["client_id"], at=now, received_at=request["created_at"], result="served",
            error=f"document request {request['request_id']}: {request['record_kind']} record {record_id}",
            client=request["client_id"], iin_hash=request.get("subject"), case_id=request.get("case_id"))

    def _served_from_store(self, conn: Tx, items: list[tuple[dict[str, Any], Any]]) -> list[None]:
        rows, events = [], []
        for request, record in items:
            rows.append({**request, "state": "done", "record_id": record.id, "served_from": "store",
                         "completed_at": request["created_at"]})
            events.append(self._read_event(request, record.id, request["created_at"]))
        self.documents.insert_requests(conn, rows)
        self.store.insert_exchanges(conn, events)
        return [None] * len(items)

    def _join(self, conn: Tx, joins: list[_Join]) -> list[_Join]:
        """Record each request and join its record's flight, or start one (at most one per key, any process)."""
        for join in joins:
            req = join.request
            key = Key(req["record_kind"], req["subject"], req["instance"])
            now = req["created_at"]
            self.documents.insert_requests(conn, [req])
            flight = self.documents.join_flight(conn, key, leader=join.leader, now=now,
                                                lease_until=now + self.lease)
            leader, waiters, join.retry = flight.leader, flight.waiters, flight.retry
            join.led = leader == join.leader
            join.joined = not join.led
            record = self.documents.valid_record_in(conn, key, now)
            if record is not None:  # a leader landed between our read and this transaction
                if join.led and waiters == 0:
                    self.documents.drop_flight(conn, key, leader=join.leader)
                self.documents.mark_served(conn, req["request_id"], record_id=record.id, now=now)
                self.store.insert_exchanges(conn, [self._read_event(req, record.id, now)])
                join.record, join.led, join.joined = record, False, False
        return joins

    # --- the upstream call ---------------------------------------------------------------------

    def _launch(self, key: Key, *, leader: str, iin: str, purpose: str, superseding: bool = False,
                retry: FlightRetry = FlightRetry()) -> None:
        if key in self._flying and not superseding:
            return
        # Not tied to the request that started it: the requester may go away, the others still get the result.
        task = asyncio.create_task(self._fly(key, leader=leader, iin=iin, purpose=purpose, retry=retry))
        self._flying[key] = (task, leader)
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: Key, task: asyncio.Task | None) -> None:
        flight = self._flying.get(key)
        if flight is not None and flight[0] is task:  # never a newer flight's entry
            del self._flying[key]

    async def _fly(self, key: Key, *, leader: str, iin: str, purpose: str, retry: FlightRetry) -> None:
        inst = self.mappings.instance(key.instance)
        kind = self.mappings.documents.records.get(key.record_kind)  # type: ignore[call-overload]
        landing = _Landing(key, leader, None, None, kind.validity_s if kind else 0.0, self.clock())
        try:
            if inst is None or kind is None:
                raise _Failed(f"instance {key.instance} or kind {key.record_kind} is no longer configured")
            landing.result = await self._ask(inst, key, iin=iin, purpose=purpose, landing=landing, retry=retry)
        except _Superseded:
            return  # another process leads the flight now and lands it
        except _Failed as exc:
            landing.error = str(exc)
        except Exception as exc:  # noqa: BLE001
            log.exception("document flight failed", extra={"instance": key.instance, "record_kind": key.record_kind})
            landing.error = f"{type(exc).__name__}: {exc}"
        landing.now = self.clock()
        try:
            accepted = await self.store.committer.submit(self._land, landing)
        except Exception:  # noqa: BLE001
            # The lease runs out and the sweeper (here or in another process) asks again: nothing is lost.
            log.exception("recording a document result failed", extra={"instance": key.instance})
            return
        # Landed: the flight row is gone, so the key is free here too. Dropped now, not in a done callback: a
        # request resumed by this same commit may start the key's next flight (after a failure nothing is
        # stored), and a stale entry would make _launch skip it, leaving that flight's waiters for the sweeper.
        self._forget(key, asyncio.current_task())
        for result in accepted:
            self.accepter.notify(result)

    async def _ask(self, inst: Instance, key: Key, *, iin: str, purpose: str, landing: _Landing,
                   retry: FlightRetry) -> RecordResult:
        """Ask until an answer or the retry policy gives up. The policy's state is the flight row's, so a
        successor that takes the flight over counts on from this one's attempts."""
        adapter = self.adapters.get(inst.counterpart)
        if adapter is None or not hasattr(adapter, "encode_lookup"):
            raise _Failed(f"{inst.counterpart} answers no record lookups")
        lookup_adapter: LookupAdapter = adapter
        mappings = self.mappings.for_instance(inst)
        decider = RetryDecider(inst.retry)
        # Inside the lease, or another process would take over while this one still asks.
        deadline_s = min(inst.retry.deadline_s, self.lease.total_seconds() * 0.8)
        attempt = retry.attempts
        first = retry.first_attempt_at
        lookup = RecordLookup(request_id=str(uuid.uuid4()), record_kind=key.record_kind, iin=iin, purpose=purpose)

        def encode() -> WireRequest:
            return lookup_adapter.encode_lookup(lookup, mappings=mappings, instance=inst,
                                                context=EncodeContext(now=self.clock()))

        def decode(response: WireResponse, received_at: datetime) -> RecordResult:
            return lookup_adapter.decode_lookup(response, mappings=mappings, lookup=lookup,
                                                context=DecodeContext(received_at=received_at))

        if retry.next_attempt_at is not None:
            await self._until(retry.next_attempt_at)
        while True:
            attempt += 1
            first = first or self.clock()
            hop = await self.exchange.call(inst, encode=encode, decode=decode)
            failure = hop.failure
            landing.exchanges.append(hop_row(
                hop="lookup", peer=inst.name, attempt=attempt, request_out_at=hop.sent_at or first,
                response_in_at=hop.answered_at, status_code=hop.status,
                result="ok" if failure is None else "failed", iin_hash=key.subject,
                error=f"{key.record_kind} lookup {lookup.request_id}" + (f": {failure.reason}" if failure else "")))
            self.metrics.document_upstream.labels(key.record_kind, inst.name,
                                                  "ok" if failure is None else "failed").inc()
            if failure is None and hop.result is not None:
                return hop.result
            assert failure is not None
            now = self.clock()
            decision = decider.decide(failure, attempt=attempt, first_attempt_at=first, now=now)
            if decision.retry_in is None:
                raise _Failed(decision.reason)
            if (now - first).total_seconds() + decision.retry_in > deadline_s:
                raise _Failed(f"{failure.reason}; next attempt would fall after the lookup deadline of "
                              f"{deadline_s:.0f} s")
            due = now + timedelta(seconds=decision.retry_in)
            written, landing.exchanges = landing.exchanges, []
            kept = await self.store.committer.submit(
                self._retry_later, (key, landing.leader, FlightRetry(attempt, first, due), written))
            if not kept:
                raise _Superseded()
            await self._until(due)

    async def _until(self, due: datetime) -> None:
        """Wait for a retry's due time (the clock is injected; the wait is the loop's timer)."""
        delay = (due - self.clock()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

    def _retry_later(self, conn: Tx, items: list[tuple[Key, str, FlightRetry, list[dict[str, Any]]]]
                     ) -> list[bool]:
        out = []
        for key, leader, retry, hops in items:
            self.store.insert_exchanges(conn, hops)
            out.append(self.documents.retry_later(conn, key, leader=leader, retry=retry))
        return out

    def _land(self, conn: Tx, landings: list[_Landing]) -> list[list]:
        """The flight's result: the record (never a failure), every waiting request resolved, results pushed."""
        out: list[list] = []
        for landing in landings:
            key, now = landing.key, landing.now
            # First: this takes the flight row's lock, so requests joining right now are committed before we
            # resolve the waiting ones below (or they see our record and resolve themselves).
            if not self.documents.drop_flight(conn, key, leader=landing.leader):
                # The lease ran out and another flight took over: it stores the record and resolves the waiting
                # requests, so a record stays unchanged while valid (processes keep copies until expires_at).
                self.store.insert_exchanges(conn, landing.exchanges)
                out.append([])
                continue
            record_id = None
            result = landing.result
            if result is not None:
                data = self.cipher.encrypt(orjson.dumps(result.data).decode(), context="record") if result.found \
                    else None
                record_id = self.documents.put_record(conn, key, {
                    "status": "found" if result.found else "not_found", "data": data, "as_of": result.as_of,
                    "fetched_at": now, "expires_at": now + timedelta(seconds=landing.validity_s),
                    "request_id": landing.leader.split(":", 1)[1]})
            waiting = self.documents.resolve_waiting(conn, key, state="done" if result is not None else "failed",
                                                     record_id=record_id, now=now, error=landing.error)
            self.store.insert_exchanges(conn, landing.exchanges)
            if record_id is not None:
                self.store.insert_exchanges(conn, [
                    self._read_event({"request_id": w.request_id, "client_id": w.client_id, "case_id": w.case_id,
                                      "subject": key.subject, "record_kind": key.record_kind,
                                      "created_at": w.created_at}, record_id, now)
                    for w in waiting])
            pushes = [Incoming(message=self._ready(w.request_id, w.case_id, key, result, landing.error, now),
                               source=key.instance, received_at=now, hop="document") for w in waiting]
            accepted = self.accepter.accept_many(conn, pushes) if pushes else []
            out.append([a for a in accepted if not isinstance(a, Exception)])
        return out

    def _ready(self, request_id: str, case_id: str, key: Key, result: RecordResult | None, error: str | None,
               now: datetime) -> DocumentReady:
        body: dict[str, Any] = {"request_id": request_id, "record_kind": key.record_kind}
        if result is None:
            body |= {"status": "failed", "reason": (error or "the upstream call failed")[:4000]}
        else:
            body |= {"status": "found" if result.found else "not_found", "as_of": result.as_of,
                     "record": result.data if result.found else None}
        return DocumentReady(type="document.ready", case_id=case_id, occurred_at=now, body=body,
                             message_id=uuid.uuid5(uuid.NAMESPACE_URL, f"document-request/{request_id}"))

    # --- reading and recovery ------------------------------------------------------------------

    async def get(self, *, principal: Principal, request_id: str) -> dict[str, Any]:
        req, record = await self.documents.request_with_record(request_id)
        # Each requester sees only its own requests: another client's request does not exist for it.
        if req is None or req.client_id != principal.client_id:
            raise NotFound(f"no document request {request_id}")
        body: dict[str, Any] = {
            "request_id": req.request_id, "case_id": req.case_id, "record_kind": req.record_kind,
            "instance": req.instance, "state": req.state, "status_url": self.status_url(req.request_id),
            "created_at": req.created_at.isoformat(),
            "completed_at": req.completed_at.isoformat() if req.completed_at else None,
        }
        if req.state == "failed":
            body["reason"] = req.error
        if record is not None and req.state == "done":
            body["served_from"] = req.served_from
            body |= self._record_view(record)
            await self.store.record_hop(self._read_event(
                {"request_id": req.request_id, "client_id": principal.client_id, "record_kind": req.record_kind,
                 "case_id": req.case_id, "subject": req.subject, "created_at": self.clock()}, record.id,
                self.clock()))
        return body

    async def _step(self) -> None:
        await self.sweep()

    async def sweep(self) -> int:
        """Renew this process's flights; take over those whose leader died (lease over) and ask again."""
        now = self.clock()
        if self._flying:
            # A slow upstream call keeps its flight while this process lives; only a silent process loses it.
            leaders = [(key, leader) for key, (_, leader) in self._flying.items()]
            await self.store.committer.submit(self._renew, (leaders, now + self.lease))
        taken = 0
        for stale in await self.documents.stale_flights(now):
            leader = f"{self.process}:{uuid.uuid4()}"
            pending = await self.store.committer.submit(self._take_over, (stale.key, stale.leader, leader, now))
            if pending is None:
                continue
            iin = self.cipher.decrypt(pending.iin, context="iin")
            # A flight of this process that lost its lease (the process stalled) lands as a non-owner: superseded.
            self._launch(stale.key, leader=leader, iin=iin, purpose=pending.purpose, superseding=True,
                         retry=stale.retry)
            taken += 1
        return taken

    def _renew(self, conn: Tx, items: list[tuple[list[tuple[Key, str]], datetime]]) -> list[None]:
        for leaders, until in items:
            for key, leader in leaders:
                self.documents.renew(conn, key, leader=leader, until=until)
        return [None] * len(items)

    def _take_over(self, conn: Tx, items: list[tuple[Key, str, str, datetime]]) -> list[Any]:
        return [self.documents.take_over(conn, key, old=old, new=new, now=now, lease_until=now + self.lease)
                for key, old, new, now in items]


class _Failed(Exception):
    """The upstream call failed for good (by the retry policy): no record is stored."""


class _Superseded(Exception):
    """Another process took the flight over while this one waited to retry: it lands the result."""
