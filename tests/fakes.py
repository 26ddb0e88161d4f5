"""In-memory fakes of the gateway's own ports, for fast unit tests with no database, network or real time.

- FakeClock: the injected clock, set or advanced by the test.
- FakeTransport: scripted answers per instance (a WireResponse, a TransportFailure to raise, or a callable), the
  requests it was sent, and an optional gate that holds calls in flight until the test opens it.
- FakeSigner, FakeVerifier: the exchange's signing and response-verification ports.
- FakeCommitter: the group commit, one item per transaction; what a handler raises rolls the fakes' rows back
  and runs the transaction's on_rollback undos.
- FakeHopWriter: gateway.documents.HopWriter (hop rows in a list); FakeStore: AcceptStore + DeliveryStore (and a
  HopWriter too, so a document flow and its accepter share one transaction, as in production).
- FakeDocumentRows: gateway.documents.DocumentRows with the single-flight semantics of gateway/storage/documents.py.
- FakeDispatcher: a worker seated on the accepter's Handoff.

Rows are checked against the SQL tables' columns, so a fake never accepts a row the real store would refuse.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, Callable, Collection, Iterable

from gateway.mapping import Instance
from gateway.pipeline.ports import ClaimedDelivery, Handler
from gateway.pipeline.verify import CounterpartSignatureError
from gateway.storage.documents import FlightJoin, FlightRetry, RecordKey, StaleFlight
from gateway.storage.hops import LOG_ONLY
from gateway.storage.tables import cases, deliveries, document_requests, exchanges, messages, records, referrals
from gateway.wire import TransportFailure, WireRequest, WireResponse

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 2.0, what: str = "the condition") -> None:
    """Wait for `predicate` to hold, letting other tasks run; fail after `timeout_s` (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.001)


# --- time ------------------------------------------------------------------------------------------------------


class FakeClock:
    """A gateway.wire.Clock that moves only when the test says so."""

    def __init__(self, start: datetime = T0) -> None:
        if start.tzinfo is None:
            raise ValueError("the gateway's clock is timezone-aware")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("the gateway's clock is timezone-aware")
        self.now = when

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        self.now += timedelta(seconds=seconds, **delta)
        return self.now


# --- the wire --------------------------------------------------------------------------------------------------

Answer = WireResponse | TransportFailure | Callable[[WireRequest], WireResponse]


@dataclass(frozen=True, slots=True)
class Sent:
    instance: str
    request: WireRequest


class FakeTransport:
    """The exchange's SendPort. Each instance answers from its own script, in order; a call with nothing scripted
    fails the test (AssertionError, which the exchange does not take for a transport failure).

    With `gate` set, every call waits on it after recording what was sent: a test holds calls in flight and opens
    the gate (gate.set()) when it is ready."""

    def __init__(self, answers: dict[str, Iterable[Answer]] | None = None, *,
                 gate: asyncio.Event | None = None) -> None:
        self._answers: dict[str, deque[Answer]] = {name: deque(a) for name, a in (answers or {}).items()}
        self.gate = gate
        self.sent: list[Sent] = []
        self.in_flight = 0

    def script(self, instance: str, *answers: Answer) -> None:
        self._answers.setdefault(instance, deque()).extend(answers)

    def calls(self, instance: str | None = None) -> int:
        return sum(1 for s in self.sent if instance is None or s.instance == instance)

    async def send(self, instance: Instance, request: WireRequest) -> WireResponse:
        self.sent.append(Sent(instance.name, request))
        queue = self._answers.get(instance.name)
        if not queue:
            raise AssertionError(f"FakeTransport: no answer scripted for call {self.calls(instance.name)} "
                                 f"to {instance.name}")
        answer = queue.popleft()
        self.in_flight += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


SIGNATURE_HEADER = "x-fake-signature"


class FakeSigner:
    """gateway.pipeline.ports.Signer: marks the request with a header naming the instance and the call's number."""

    def __init__(self, *, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def sign(self, request: WireRequest, *, instance: Instance) -> WireRequest:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return replace(request, headers=request.headers + ((SIGNATURE_HEADER, f"{instance.name}/{self.calls}"),))


@dataclass(frozen=True, slots=True)
class FakeIdentity:
    instance: str
    keyid: str | None
    verified: bool = True


class FakeVerifier:
    """gateway.pipeline.exchange.ResponseVerifier: passes answers through as signed by `keyid`, or refuses them
    with CounterpartSignatureError(reason, detail) when `refuse` is given."""

    def __init__(self, *, keyid: str | None = "fake-key", refuse: tuple[str, str] | None = None) -> None:
        self.keyid = keyid
        self.refuse = refuse
        self.checked: list[tuple[str, WireRequest, WireResponse]] = []

    async def verify_response(self, inst: Instance, *, request: WireRequest, response: WireResponse
                              ) -> tuple[WireResponse, FakeIdentity]:
        self.checked.append((inst.name, request, response))
        if self.refuse is not None:
            raise CounterpartSignatureError(*self.refuse)
        return response, FakeIdentity(inst.name, self.keyid)


# --- the store ---------------------------------------------------------------------------------------------------

_tx_ids = itertools.count(1)


class FakeTx:
    """An open transaction of the fakes: what a handler registered to undo if it does not commit."""

    def __init__(self) -> None:
        self.id = next(_tx_ids)
        self.undo: list[Callable[[], None]] = []
        self.state = "open"  # open | committed | rolled back


class FakeCommitter:
    """gateway.pipeline.ports.WriteQueue with one item per transaction: `submit(handler, item)` runs
    `handler(tx, [item])[0]` with a fresh FakeTx. If the handler raises, the rows of every fake that joined this
    committer are put back as they were and the transaction's on_rollback undos run (newest first); an exception
    the handler returns for its item is raised to the caller after the commit, as the real committer does."""

    def __init__(self) -> None:
        self._participants: list[Any] = []  # each with snapshot() and restore(snapshot)
        self.commits = 0
        self.rollbacks = 0

    def join(self, participant: Any) -> None:
        if participant not in self._participants:
            self._participants.append(participant)

    async def submit(self, handler: Handler, item: Any) -> Any:
        await asyncio.sleep(0)  # the caller resumes on a later turn of the loop, as with the real queue
        tx = FakeTx()
        saved = [(p, p.snapshot()) for p in self._participants]
        try:
            results = handler(tx, [item])
            if len(results) != 1:
                raise AssertionError(f"a handler returned {len(results)} results for one item")
        except BaseException:
            for participant, snapshot in saved:
                participant.restore(snapshot)
            for undo in reversed(tx.undo):
                undo()
            tx.state = "rolled back"
            self.rollbacks += 1
            raise
        tx.state = "committed"
        self.commits += 1
        (result,) = results
        if isinstance(result, BaseException):
            raise result
        return result


def _columns(table: Any, row: dict[str, Any], *, extra: Collection[str] = ()) -> dict[str, Any]:
    """The row with every column of `table` (unset ones None or their default); a key that is not a column
    fails as the SQL insert would."""
    names = set(table.c.keys())
    unknown = set(row) - names - set(extra)
    if unknown:
        raise AssertionError(f"not columns of {table.name}: {', '.join(sorted(unknown))}")
    out = {c.name: (c.default.arg if c.default is not None and not callable(c.default.arg) else None)
           for c in table.c}
    out.update(row)
    return out


class _Rows:
    """A fake whose state the committer can save and put back."""

    _state: tuple[str, ...] = ()

    def snapshot(self) -> dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in self._state}

    def restore(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)


class FakeHopWriter(_Rows):
    """gateway.documents.HopWriter: the committer, and hop rows kept in a list (the exchange log's keys too)."""

    _state = ("hops",)

    def __init__(self, committer: FakeCommitter | None = None) -> None:
        self.committer = committer or FakeCommitter()
        self.committer.join(self)
        self.hops: list[dict[str, Any]] = []

    def insert_exchanges(self, tx: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            full = _columns(exchanges, row, extra=LOG_ONLY)
            full["id"] = len(self.hops) + 1
            self.hops.append(full)

    async def record_hop(self, row: dict[str, Any]) -> None:
        await self.committer.submit(self._insert_hops, row)

    def _insert_hops(self, tx: Any, rows: list[dict[str, Any]]) -> list[None]:
        self.insert_exchanges(tx, rows)
        return [None] * len(rows)

    def hops_of(self, hop: str) -> list[dict[str, Any]]:
        return [h for h in self.hops if h["hop"] == hop]


class FakeStore(FakeHopWriter):
    """gateway.pipeline.ports.AcceptStore and DeliveryStore in memory, with the semantics of
    gateway/storage/store.py: a message is inserted once per message_id, a referral once per referral_id, a case's
    registration is the last one, claims are guarded by their worker."""

    _state = ("hops", "messages", "cases", "referrals", "deliveries", "_next_delivery")

    def __init__(self, committer: FakeCommitter | None = None) -> None:
        super().__init__(committer)
        self.messages: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, dict[str, Any]] = {}
        self.referrals: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[int, dict[str, Any]] = {}
        self._next_delivery = 1

    # --- AcceptStore -------------------------------------------------------------------------

    def on_rollback(self, tx: FakeTx, undo: Callable[[], None]) -> None:
        tx.undo.append(undo)

    def insert_messages(self, tx: Any, rows: list[dict[str, Any]]) -> set[str]:
        inserted = set()
        for row in rows:
            if row["message_id"] in self.messages:
                continue
            full = _columns(messages, row)
            full["id"] = len(self.messages) + 1
            self.messages[row["message_id"]] = full
            inserted.add(row["message_id"])
        return inserted

    def existing_messages(self, tx: Any, message_ids: list[str]) -> dict[str, tuple[str, str]]:
        return {m: (self.messages[m]["content_hash"], self.messages[m]["accept_response"])
                for m in message_ids if m in self.messages}

    def upsert_cases(self, tx: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.cases[row["case_id"]] = _columns(cases, row)

    def case_registrations(self, tx: Any, case_ids: set[str]) -> dict[str, tuple[str, bytes]]:
        return {c: (self.cases[c]["region"], self.messages[self.cases[c]["registered_message_id"]]["content"])
                for c in case_ids if c in self.cases}

    def insert_referrals(self, tx: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.referrals.setdefault(row["referral_id"], _columns(referrals, row))

    def lock_referral_states(self, tx: Any, referral_ids: set[str]) -> dict[str, tuple[str, str]]:
        return {rid: (r["case_id"], r["status"]) for rid, r in self.referrals.items() if rid in referral_ids}

    def set_referral_statuses(self, tx: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            referral = self.referrals.get(row["b_referral_id"])
            if referral is not None:
                referral.update(status=row["status"], updated_at=row["updated_at"])

    def insert_deliveries(self, tx: Any, rows: list[dict[str, Any]]) -> list[int]:
        ids = []
        for row in rows:
            full = _columns(deliveries, row)
            full["id"] = self._next_delivery
            self._next_delivery += 1
            self.deliveries[full["id"]] = full
            ids.append(full["id"])
        return ids

    def parked_for_cases(self, tx: Any, case_ids: set[str]) -> list[tuple[int, str, bytes]]:
        return [(d["id"], d["counterpart"], self.messages[d["message_id"]]["content"])
                for d in self.deliveries.values() if d["case_id"] in case_ids and d["state"] == "parked"]

    def reroute(self, tx: Any, delivery_id: int, *, instance: str | None, reason: str | None,
                now: datetime) -> None:
        row = self.deliveries[delivery_id]
        row.update(instance=instance, reason=reason)
        if instance is not None:
            row.update(state="pending", next_attempt_at=now)

    # --- DeliveryStore -----------------------------------------------------------------------

    def claim_in(self, tx: Any, *, worker: str, now: datetime, limit: int, lease: timedelta,
                 only: Collection[str] = (), exclude: Collection[str] = (),
                 ids: Collection[int] = ()) -> list[ClaimedDelivery]:
        if limit <= 0:
            return []
        chosen = set(ids)

        def due(d: dict[str, Any]) -> bool:
            if chosen and d["id"] not in chosen:
                return False
            if d["state"] == "pending":
                return bool(chosen) or d["next_attempt_at"] <= now
            return d["state"] == "in_flight" and d["lease_until"] is not None and d["lease_until"] < now

        picked = [d for d in self.deliveries.values() if due(d)
                  and (not exclude or d["instance"] not in exclude) and (not only or d["instance"] in only)]
        picked.sort(key=lambda d: d["next_attempt_at"])
        out = []
        for d in picked[:limit]:
            d.update(state="in_flight", claimed_by=worker, lease_until=now + lease, attempts=d["attempts"] + 1,
                     first_attempt_at=d["first_attempt_at"] or now)
            case = self.case_registrations(tx, {d["case_id"]}).get(d["case_id"])
            out.append(ClaimedDelivery(d["id"], d["message_id"], d["counterpart"], d["instance"], d["attempts"],
                                       d["first_attempt_at"], self.messages[d["message_id"]]["content"],
                                       case[1] if case else None, d["attempt_base"]))
        return out

    def claim_owners(self, tx: Any, delivery_ids: list[int]) -> dict[int, str | None]:
        return {i: self.deliveries[i]["claimed_by"] for i in delivery_ids if i in self.deliveries}

    def finish_attempts(self, tx: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            d = self.deliveries.get(row["b_id"])
            if d is None or d["claimed_by"] != row["b_worker"]:
                continue  # a worker whose lease ran out does not overwrite its successor
            d.update({k: v for k, v in row.items() if not k.startswith("b_")}, lease_until=None, claimed_by=None)

    def release_claims(self, tx: Any, delivery_ids: list[int], *, worker: str, now: datetime) -> None:
        for i in delivery_ids:
            d = self.deliveries.get(i)
            if d is not None and d["claimed_by"] == worker and d["state"] == "in_flight":
                d.update(state="pending", claimed_by=None, lease_until=None, next_attempt_at=now)

    async def next_due(self) -> datetime | None:
        due = [d["next_attempt_at"] for d in self.deliveries.values() if d["state"] == "pending"]
        return min(due, default=None)

    # --- for tests ---------------------------------------------------------------------------

    def deliveries_of(self, message_id: str) -> list[dict[str, Any]]:
        return [d for d in self.deliveries.values() if d["message_id"] == message_id]


# --- document requests -------------------------------------------------------------------------------------------


@dataclass
class FakeFlight:
    leader: str
    lease_until: datetime
    started_at: datetime
    waiters: int = 0
    attempts: int = 0
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


def _row(values: dict[str, Any]) -> SimpleNamespace:
    """A read-only copy, with attributes as a SQL row has."""
    return SimpleNamespace(**copy.deepcopy(values))


class FakeDocumentRows(_Rows):
    """gateway.documents.DocumentRows in memory, with gateway/storage/documents.py's semantics: at most one flight
    per record key; joining a flight whose lease ran out takes it over; a flight ends only by its leader.

    `on_retry_later`, when set, is called with the key and the FlightRetry each time a leader keeps its retry
    state (a test can move a FakeClock to the retry's due time there)."""

    _state = ("requests", "records", "flights", "_next_record")

    def __init__(self, committer: FakeCommitter | None = None) -> None:
        if committer is not None:
            committer.join(self)
        self.requests: dict[str, dict[str, Any]] = {}
        self.records: dict[RecordKey, dict[str, Any]] = {}
        self.flights: dict[RecordKey, FakeFlight] = {}
        self._next_record = 1
        self.retries: list[tuple[RecordKey, FlightRetry]] = []  # each retry_later that kept its state
        self.on_retry_later: Callable[[RecordKey, FlightRetry], None] | None = None

    # --- reads on their own connection -------------------------------------------------------

    async def valid_record(self, key: RecordKey, now: datetime) -> Any:
        return self.valid_record_in(None, key, now)

    async def request_with_record(self, request_id: str) -> tuple[Any, Any]:
        req = self.requests.get(request_id)
        if req is None:
            return None, None
        record = None
        if req["record_id"] is not None:
            record = next((_row(r) for r in self.records.values() if r["id"] == req["record_id"]), None)
        return _row(req), record

    async def stale_flights(self, now: datetime) -> list[StaleFlight]:
        return [StaleFlight(key, f.leader, FlightRetry(f.attempts, f.first_attempt_at, f.next_attempt_at))
                for key, f in self.flights.items() if f.lease_until < now]

    # --- inside a write transaction ----------------------------------------------------------

    def insert_requests(self, tx: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["request_id"] in self.requests:
                raise AssertionError(f"duplicate document request {row['request_id']}")
            self.requests[row["request_id"]] = _columns(document_requests, row)

    def valid_record_in(self, tx: Any, key: RecordKey, now: datetime) -> Any:
        record = self.records.get(key)
        return _row(record) if record is not None and record["expires_at"] > now else None

    def join_flight(self, tx: Any, key: RecordKey, *, leader: str, now: datetime, lease_until: datetime
                    ) -> FlightJoin:
        flight = self.flights.get(key)
        if flight is None:
            self.flights[key] = FakeFlight(leader=leader, lease_until=lease_until, started_at=now)
            return FlightJoin(leader, 0)
        if flight.lease_until < now:  # its leader died: this one takes over (the retry state stays)
            flight.leader, flight.lease_until = leader, lease_until
        flight.waiters += 1
        return FlightJoin(flight.leader, flight.waiters,
                          FlightRetry(flight.attempts, flight.first_attempt_at, flight.next_attempt_at))

    def drop_flight(self, tx: Any, key: RecordKey, *, leader: str) -> bool:
        flight = self.flights.get(key)
        if flight is None or flight.leader != leader:
            return False
        del self.flights[key]
        return True

    def mark_served(self, tx: Any, request_id: str, *, record_id: int, now: datetime) -> None:
        req = self.requests.get(request_id)
        if req is not None:
            req.update(state="done", record_id=record_id, served_from="store", completed_at=now)

    def put_record(self, tx: Any, key: RecordKey, values: dict[str, Any]) -> int:
        record = self.records.get(key)
        if record is None:
            record = _columns(records, {"record_kind": key.record_kind, "subject": key.subject,
                                        "instance": key.instance, **values})
            record["id"] = self._next_record
            self._next_record += 1
            self.records[key] = record
        else:
            _columns(records, values)  # the same columns an INSERT would take
            record.update(values)  # ON CONFLICT DO UPDATE: same row, same id
        return record["id"]

    def resolve_waiting(self, tx: Any, key: RecordKey, *, state: str, record_id: int | None, now: datetime,
                        error: str | None) -> list[Any]:
        out = []
        for req in self.requests.values():
            if (req["record_kind"], req["subject"], req["instance"]) != (key.record_kind, key.subject, key.instance):
                continue
            if req["state"] != "pending":
                continue
            req.update(state=state, record_id=record_id, served_from="upstream" if record_id else None,
                       completed_at=now, error=error)
            out.append(SimpleNamespace(request_id=req["request_id"], case_id=req["case_id"],
                                       client_id=req["client_id"], created_at=req["created_at"]))
        return out

    def renew(self, tx: Any, key: RecordKey, *, leader: str, until: datetime) -> None:
        flight = self.flights.get(key)
        if flight is not None and flight.leader == leader:
            flight.lease_until = until

    def retry_later(self, tx: Any, key: RecordKey, *, leader: str, retry: FlightRetry) -> bool:
        flight = self.flights.get(key)
        if flight is None or flight.leader != leader:
            return False
        flight.attempts, flight.first_attempt_at, flight.next_attempt_at = (
            retry.attempts, retry.first_attempt_at, retry.next_attempt_at)
        self.retries.append((key, retry))
        if self.on_retry_later is not None:
            self.on_retry_later(key, retry)
        return True

    def take_over(self, tx: Any, key: RecordKey, *, old: str, new: str, now: datetime,
                  lease_until: datetime) -> Any:
        flight = self.flights.get(key)
        if flight is None or flight.leader != old or not flight.lease_until < now:
            return None
        flight.leader, flight.lease_until = new, lease_until
        pending = next((r for r in self.requests.values()
                        if (r["record_kind"], r["subject"], r["instance"]) == (key.record_kind, key.subject,
                                                                                 key.instance)
                        and r["state"] == "pending"), None)
        if pending is None:
            del self.flights[key]
            return None
        return SimpleNamespace(iin=pending["iin"], purpose=pending["purpose"])

    # --- for tests ---------------------------------------------------------------------------

    def seed_flight(self, key: RecordKey, flight: FakeFlight) -> None:
        self.flights[key] = flight


# --- a worker seated on the Handoff ------------------------------------------------------------------------------


class FakeDispatcher:
    """gateway.pipeline.accept.Dispatcher: takes up to `room` deliveries (given back if the transaction does not
    commit), records what it was handed after the commit and how often it was woken."""

    def __init__(self, store: FakeStore, *, room: int = 1, worker_id: str = "w-fake",
                 lease: timedelta = timedelta(seconds=60)) -> None:
        self.store = store
        self.room = room
        self.worker_id = worker_id
        self.lease = lease
        self.taken: Counter[str] = Counter()
        self.dispatched: list[ClaimedDelivery] = []
        self.wakes = 0

    def take(self, tx: Any, instance: str) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.taken[instance] += 1

        def give_back() -> None:
            self.room += 1
            self.taken[instance] -= 1

        self.store.on_rollback(tx, give_back)
        return True

    def dispatch(self, claimed: tuple[ClaimedDelivery, ...]) -> None:
        self.dispatched.extend(claimed)

    def wake(self) -> None:
        self.wakes += 1


__all__ = [
    "T0", "Answer", "FakeClock", "FakeCommitter", "FakeDispatcher", "FakeDocumentRows", "FakeFlight",
    "FakeHopWriter", "FakeIdentity", "FakeSigner", "FakeStore", "FakeTransport", "FakeTx", "FakeVerifier",
    "SIGNATURE_HEADER", "Sent", "eventually",
]
