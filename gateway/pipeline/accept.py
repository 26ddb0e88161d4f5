"""Accepting canonical messages: stored, routed and queued in one transaction, exactly once per message_id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

import orjson

from gateway.canonical.errors import MessageConflict
from gateway.canonical.messages import AnyMessage, check_not_in_future, parse_message
from gateway.pipeline.ports import AcceptStore, ClaimedDelivery, Tx, derived_message_id
from gateway.pipeline.referrals import screen_replies
from gateway.wire import Clock
from gateway.pipeline.routing import Router

MATRIX_SOURCE = "routing-matrix"
REPLY_STATUS = {"referral.accepted": "accepted", "referral.completed": "completed", "referral.rejected": "rejected"}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message as it reached the gateway, with who sent it and when."""

    message: AnyMessage
    source: str
    received_at: datetime
    request_bytes: int = 0
    hop: str = "received"
    raw: bytes | None = None  # the bytes as received, for the exchange log
    client: str | None = None  # the verified sender
    signer: str | None = None  # the key that verified it


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: str
    type: str
    source: str
    duplicate: bool
    response: dict[str, Any]
    queued: int = 0
    dispatched: tuple[ClaimedDelivery, ...] = ()  # claimed in the accepting transaction, to start at once
    derived: tuple["Accepted", ...] = ()  # messages this one caused (the routing matrix's referrals)


class Dispatcher(Protocol):
    """A running delivery worker in this process that can take deliveries straight from acceptance."""

    worker_id: str
    lease: timedelta

    def take(self, tx: Tx, instance: str) -> bool:
        """Count one more claim on `instance` in this transaction, if the worker has room for it."""

    def dispatch(self, claimed: tuple[ClaimedDelivery, ...]) -> None:
        """Start attempts for deliveries claimed in a transaction that committed."""

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""


class Handoff:
    """The seat a running worker takes so acceptance hands it new deliveries: claimed in the accepting
    transaction, started once it commits. Empty in a process that runs no worker: deliveries wait for a poll."""

    def __init__(self) -> None:
        self._seated: Dispatcher | None = None
        self._worker: Dispatcher | None = None  # stays after it stands up: claims it took still start with it

    def attach(self, worker: Dispatcher) -> None:
        self._seated = self._worker = worker

    def detach(self, worker: Dispatcher) -> None:
        if self._seated is worker:
            self._seated = None

    def claim(self, tx: Tx, instance: str) -> tuple[str, timedelta] | None:
        """(worker id, lease) when the seated worker takes a delivery to `instance` in this transaction."""
        worker = self._seated
        if worker is None or not worker.take(tx, instance):
            return None
        return worker.worker_id, worker.lease

    def committed(self, result: "Accepted") -> None:
        worker = self._worker
        if worker is None:
            return
        if result.dispatched:
            worker.dispatch(result.dispatched)
        if result.queued > len(result.dispatched):
            worker.wake()


def _conflict(message_id: str) -> MessageConflict:
    return MessageConflict(
        f"message_id {message_id} was accepted before with other content; a new message needs a new message_id"
    )


class Accepter:
    def __init__(self, *, store: AcceptStore, router: Router, clock: Clock, status_url: Callable[[str], str],
                 handoff: Handoff | None = None) -> None:
        self.store = store
        self.router = router
        self.clock = clock
        self.status_url = status_url
        self.handoff = handoff or Handoff()
        self.listeners: list[Callable[[Accepted], None]] = []

    async def accept(self, *, message: AnyMessage, source: str, request_bytes: int = 0, raw: bytes | None = None,
                     client: str | None = None, signer: str | None = None) -> Accepted:
        now = self.clock()
        check_not_in_future(message, now=now)
        incoming = Incoming(message=message, source=source, received_at=now, request_bytes=request_bytes, raw=raw,
                            client=client, signer=signer)
        commit = asyncio.ensure_future(self.store.committer.submit(self.accept_many, incoming))
        try:
            result = await asyncio.shield(commit)
        except asyncio.CancelledError:
            # The caller went away; the transaction may still commit, and what it claimed must still start.
            commit.add_done_callback(self._notify_later)
            raise
        self.notify(result)
        return result

    def _notify_later(self, commit: asyncio.Future) -> None:
        if not commit.cancelled() and commit.exception() is None:
            self.notify(commit.result())

    def notify(self, result: Accepted) -> None:
        for listener in self.listeners:
            listener(result)
        self.handoff.committed(result)
        for derived in result.derived:
            self.notify(derived)

    def accept_many(self, tx: Tx, batch: list[Incoming]) -> list[Accepted | MessageConflict]:
        """The transactional core, also used when a delivery's replies are recorded with its attempt.

        Every statement covers the whole batch; order within the batch is kept (a case registered
        earlier in the batch routes a referral later in it)."""
        results: list[Accepted | MessageConflict | None] = [None] * len(batch)
        refused, moving = screen_replies(self.store, tx, batch)  # replies that contradict their referral: refused hops
        rows: list[dict[str, Any]] = []
        first: dict[str, int] = {}
        hashes: list[str] = []
        for i, inc in enumerate(batch):
            msg = inc.message
            message_id = str(msg.message_id)
            content = msg.to_json()
            hashes.append(msg.content_hash())
            if message_id in first:  # the same id twice in one batch: the later one is a re-send
                continue
            if i in refused:
                results[i] = refused[i]
                continue
            first[message_id] = i
            response = {
                "message_id": message_id,
                "status": "accepted",
                "received_at": inc.received_at.isoformat().replace("+00:00", "Z"),
                "status_url": self.status_url(message_id),
            }
            rows.append({
                "message_id": message_id, "type": msg.type, "case_id": msg.case_id,
                "occurred_at": msg.occurred_at, "received_at": inc.received_at, "source": inc.source,
                "content_hash": hashes[i], "content": content, "accept_response": orjson.dumps(response).decode(),
            })
            results[i] = Accepted(message_id, msg.type, inc.source, False, response)
        inserted = self.store.insert_messages(tx, rows)
        existing = self.store.existing_messages(tx, [r["message_id"] for r in rows
                                                             if r["message_id"] not in inserted])
        new: list[int] = []
        for i, inc in enumerate(batch):
            if i in refused:
                continue
            message_id = str(inc.message.message_id)
            j = first[message_id]
            if message_id in existing:
                stored_hash, stored_response = existing[message_id]
                results[i] = (Accepted(message_id, inc.message.type, inc.source, True, orjson.loads(stored_response))
                              if stored_hash == hashes[i] else _conflict(message_id))
            elif j != i:
                original = results[j]
                results[i] = (Accepted(message_id, inc.message.type, inc.source, True, original.response)
                              if hashes[j] == hashes[i] and isinstance(original, Accepted) else _conflict(message_id))
            else:
                new.append(i)
        routed = self._route(tx, [batch[i] for i in new], moving)
        for i, (count, claimed) in zip(new, routed):
            results[i] = replace(results[i], queued=count, dispatched=claimed)
        for i in new:
            derived = self._matrix_referrals(batch[i])
            if derived:
                outcome = self.accept_many(tx, derived)
                results[i] = replace(results[i], derived=tuple(r for r in outcome if isinstance(r, Accepted)))
        now = self.clock()
        self.store.insert_exchanges(tx, [
            {
                "message_id": str(inc.message.message_id), "delivery_id": None, "hop": inc.hop,
                "peer": inc.source, "attempt": None, "request_in_at": inc.received_at, "request_out_at": None,
                "response_in_at": None, "response_out_at": now, "request_bytes": inc.request_bytes,
                "response_bytes": None,
                "status_code": 202 if isinstance(res, Accepted) else res.status,
                "result": ("duplicate" if res.duplicate else "accepted") if isinstance(res, Accepted) else "refused",
                "error": None if isinstance(res, Accepted) else getattr(res, "hop_error", res.slug),
                "case_id": inc.message.case_id, "iin": _iin(inc.message), "request_raw": inc.raw,
                "client": inc.client, "signer": inc.signer,
            }
            for inc, res in zip(batch, results)
        ])
        return results  # type: ignore[return-value]

    def _matrix_referrals(self, inc: Incoming) -> list[Incoming]:
        """The routing matrix: a detected risk creates the referrals the matrix lists, linked by risk_id.

        Ids derive from the risk message's id, so the same risk re-sent creates nothing new."""
        msg = inc.message
        if msg.type != "risk.detected":
            return []
        kinds = self.router.mappings.matrix.referrals_for(
            domain=msg.body.domain, level=msg.body.level, trigger=msg.body.trigger
        )
        out = []
        for kind in kinds:
            message_id = derived_message_id(msg.message_id, f"matrix/{kind}")
            referral = parse_message({
                "message_id": str(message_id),
                "type": "referral.requested",
                "case_id": msg.case_id,
                "occurred_at": msg.occurred_at.isoformat(),
                "body": {"referral_id": f"RM-{message_id.hex[:20]}", "kind": kind, "risk_id": msg.body.risk_id,
                         "details": {"trigger": msg.body.trigger, "level": msg.body.level}},
            })
            out.append(Incoming(message=referral, source=MATRIX_SOURCE, received_at=inc.received_at, hop="derived"))
        return out

    def _route(
        self, tx: Tx, batch: list[Incoming], moving: set[str]
    ) -> list[tuple[int, tuple[ClaimedDelivery, ...]]]:
        """Record cases and referrals, create deliveries; per message: how many queued, which claimed.

        While this process's worker has room, a delivery is inserted already claimed by it (with the
        usual lease), so it starts as soon as the transaction commits: no claim round trip, no poll.
        A crash before the attempt leaves a claim whose lease brings it back, as for any claim."""
        registered = [inc for inc in batch if inc.message.type == "case.registered"]
        self.store.upsert_cases(tx, [
            {"case_id": inc.message.case_id, "region": inc.message.body.region,
             "registered_message_id": str(inc.message.message_id)} for inc in registered
        ])
        known = self.store.case_registrations(tx, {inc.message.case_id for inc in batch})
        regions = {case_id: region for case_id, (region, _) in known.items()}
        if registered:
            self._unpark(tx, {inc.message.case_id for inc in registered}, regions)
        self.store.insert_referrals(tx, [
            {"referral_id": inc.message.body.referral_id, "case_id": inc.message.case_id,
             "kind": inc.message.body.kind, "risk_id": inc.message.body.risk_id,
             "request_message_id": str(inc.message.message_id), "status": "requested",
             "updated_at": inc.received_at}
            for inc in batch if inc.message.type == "referral.requested"
        ])
        self.store.set_referral_statuses(tx, [
            {"b_referral_id": inc.message.body.referral_id, "status": REPLY_STATUS[inc.message.type],
             "updated_at": inc.received_at}
            for inc in batch if inc.message.type in REPLY_STATUS and str(inc.message.message_id) in moving
        ])
        deliveries: list[dict[str, Any]] = []
        owners: list[int] = []  # index in batch of each delivery row
        for index, inc in enumerate(batch):
            msg = inc.message
            for r in self.router.routes(msg, region=regions.get(msg.case_id), source=inc.source):
                row = {
                    "message_id": str(msg.message_id), "case_id": msg.case_id, "counterpart": r.counterpart,
                    "instance": r.instance, "state": "pending" if r.instance else "parked", "attempts": 0,
                    "next_attempt_at": inc.received_at, "created_at": inc.received_at, "reason": r.reason,
                    "claimed_by": None, "lease_until": None, "first_attempt_at": None,
                }
                seat = self.handoff.claim(tx, r.instance) if r.instance is not None else None
                if seat is not None:
                    worker_id, lease = seat
                    row.update(state="in_flight", attempts=1, claimed_by=worker_id,
                               lease_until=inc.received_at + lease, first_attempt_at=inc.received_at)
                deliveries.append(row)
                owners.append(index)
        ids = self.store.insert_deliveries(tx, deliveries)
        queued = [0] * len(batch)
        claimed: list[list[ClaimedDelivery]] = [[] for _ in batch]
        for delivery_id, row, index in zip(ids, deliveries, owners):
            if row["instance"] is not None:
                queued[index] += 1
            if row["state"] == "in_flight":
                case_id = batch[index].message.case_id
                claimed[index].append(ClaimedDelivery(
                    delivery_id, row["message_id"], row["counterpart"], row["instance"], 1,
                    row["first_attempt_at"], batch[index].message.to_json(),
                    known[case_id][1] if case_id in known else None,
                ))
        return [(q, tuple(c)) for q, c in zip(queued, claimed)]

    def _unpark(self, tx: Tx, case_ids: set[str], regions: dict[str, str]) -> None:
        """Deliveries that waited for these cases' regions are routed now."""
        now = self.clock()
        for delivery_id, counterpart, content in self.store.parked_for_cases(tx, case_ids):
            parked = parse_message(content)
            for route in self.router.routes(parked, region=regions.get(parked.case_id), source=""):
                if route.counterpart == counterpart:
                    self.store.reroute(tx, delivery_id, instance=route.instance, reason=route.reason,
                                             now=now)


def _iin(message: AnyMessage) -> str | None:
    person = getattr(message.body, "person", None)
    return getattr(person, "iin", None)
