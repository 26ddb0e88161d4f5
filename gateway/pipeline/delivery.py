"""The delivery worker: claims due deliveries, encodes, sends, retries by policy, records every attempt."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from gateway.canonical.messages import AnyMessage, CaseRegistered, parse_message
from gateway.loops import Loop
from gateway.mapping import Instance, Mappings
from gateway.observability import Metrics
from gateway.pipeline.accept import Accepter, Incoming
from gateway.wire import Clock
from gateway.pipeline.ports import (
    Adapter,
    ClaimedDelivery,
    DecodeContext,
    DeliveryStore,
    EncodeContext,
    Tx,
    WireRequest,
    WireResponse,
)
from gateway.pipeline.exchange import Hop, OutboundExchange
from gateway.pipeline.retry import CircuitBreaker, DeliveryFailure, RetryDecider, reason_class
from gateway.storage.hops import hop_row

log = logging.getLogger("gateway.delivery")


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 64
    poll_interval_s: float = 0.5
    lease_s: float = 60.0


@dataclass
class _Attempt:
    delivery: ClaimedDelivery
    instance: Instance | None
    hop: Hop[tuple[AnyMessage, ...]] | None = None  # None when nothing could be tried (no instance, no adapter)
    failure: DeliveryFailure | None = None
    case_id: str | None = None
    now: datetime | None = None
    state: str = ""
    reason: str | None = None
    next_at: datetime | None = None

    @property
    def sent_at(self) -> datetime | None:
        return self.hop.sent_at if self.hop else None

    @property
    def responded_at(self) -> datetime | None:
        return self.hop.answered_at if self.hop else None

    @property
    def response(self) -> WireResponse | None:
        return self.hop.response if self.hop else None

    @property
    def replies(self) -> tuple[AnyMessage, ...]:
        return (self.hop.result or ()) if self.hop and self.failure is None else ()


class DeliveryWorker:
    def __init__(
        self,
        *,
        store: DeliveryStore,
        accepter: Accepter,
        adapters: dict[str, Adapter],
        mappings: Mappings,
        exchange: OutboundExchange,
        clock: Clock,
        metrics: Metrics,
        settings: WorkerSettings = WorkerSettings(),
    ) -> None:
        self.store = store
        self.accepter = accepter
        self.adapters = adapters
        self.mappings = mappings
        self.exchange = exchange
        self.clock = clock
        self.metrics = metrics
        self.settings = settings
        self.worker_id = f"w-{uuid.uuid4().hex[:12]}"
        self.breaker = CircuitBreaker()
        self._deciders = {i.name: RetryDecider(i.retry) for i in mappings.outbound_instances}
        # Claims this process holds, per instance: counted in the claiming transaction itself (acceptance or a
        # claim, both run by the committer one after the other), so the limits hold however they interleave.
        self._in_flight: Counter[str] = Counter()
        self._slots = threading.Lock()  # SQLite's handlers count in the writer thread, attempts end on the loop
        self._tasks: dict[asyncio.Task, ClaimedDelivery] = {}
        self._stopping = False
        self.loop = Loop("delivery-worker", self._step, interval_s=settings.poll_interval_s)

    def reconfigure(self, mappings: Mappings) -> None:
        """A live counterpart change: attempts started from now on use it; retry state lives in the store."""
        self.mappings = mappings
        self._deciders = {i.name: RetryDecider(i.retry) for i in mappings.outbound_instances}

    # --- direct dispatch from acceptance ---------------------------------------------------------

    @property
    def lease(self) -> timedelta:
        # A claim must outlive its attempt, or another worker would take over a delivery still being sent.
        longest = max((i.timeout_s for i in self.mappings.outbound_instances), default=0.0)
        return timedelta(seconds=max(self.settings.lease_s, longest * 1.5))

    def take(self, tx: Tx, instance: str) -> bool:
        """Claim a slot for a delivery accepted in `tx`'s transaction; False while stopping, when the breaker
        is not closed or the limits are reached. The slot is given back if the transaction does not commit."""
        if not self.loop.running or self._stopping:
            return False
        inst = self.mappings.instance(instance)
        if inst is None or not inst.enabled or self.breaker.state(instance, now=time.monotonic()) != "closed":
            return False
        with self._slots:
            if (self._total_in_flight() >= self.settings.concurrency
                    or self._in_flight[instance] >= inst.max_in_flight):
                return False
            self._in_flight[instance] += 1
        self.store.on_rollback(tx, lambda: self._release_slots((instance,)))
        return True

    def _hold(self, tx: Tx, claimed: list[ClaimedDelivery]) -> None:
        if not claimed:
            return
        instances = tuple(d.instance for d in claimed)
        with self._slots:
            for name in instances:
                self._in_flight[name] += 1
        self.store.on_rollback(tx, lambda: self._release_slots(instances))

    def _release_slots(self, instances: tuple[str, ...]) -> None:
        with self._slots:
            for name in instances:
                self._in_flight[name] -= 1

    def dispatch(self, claimed: tuple[ClaimedDelivery, ...]) -> None:
        """Start attempts for deliveries that were claimed (and counted) in a committed transaction."""
        for delivery in claimed:
            self._start(delivery)
        self.metrics.in_flight.set(self._total_in_flight())

    def _start(self, delivery: ClaimedDelivery) -> None:
        task = asyncio.create_task(self._deliver(delivery))
        self._tasks[task] = delivery
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        self._tasks.pop(task, None)

    # --- lifecycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        self.loop.wake()

    @property
    def running(self) -> bool:
        return self.loop.running

    def start(self) -> None:
        self._stopping = False
        log.info("delivery worker started", extra={"worker": self.worker_id})
        self.loop.start()
        self.accepter.handoff.attach(self)

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Stop claiming, let attempts under way finish for up to `grace_s`, then cut the rest short and hand
        their claims back (with the store down, their lease brings them back instead). Never raises."""
        deadline = time.monotonic() + grace_s
        self.accepter.handoff.detach(self)
        self._stopping = True
        await self.loop.stop(timeout_s=min(grace_s, 5.0), interrupt=False)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        cut = dict(self._tasks)
        if not cut:
            return
        for task in cut:
            task.cancel()
        await asyncio.wait(list(cut), timeout=1.0)
        ids = [d.id for d in cut.values()]
        try:
            # The attempt may have reached the counterpart: the next one carries the same message id.
            await asyncio.wait_for(self.store.committer.submit(self._release_many, (ids, self.clock())),
                                   timeout=max(1.0, deadline - time.monotonic()))
            log.info("claims handed back at shutdown", extra={"deliveries": len(ids)})
        except Exception as exc:  # noqa: BLE001
            log.warning("claims left to their lease at shutdown (%s: %s)", type(exc).__name__, exc,
                        extra={"deliveries": len(ids)})

    def _release_many(self, tx: Tx, items: list[tuple[list[int], datetime]]) -> list[None]:
        for ids, now in items:
            self.store.release_claims(tx, ids, worker=self.worker_id, now=now)
        return [None] * len(items)

    async def _step(self) -> float:
        """One turn of the worker's loop: claim what is due, then how long to wait (a wake cuts it short)."""
        claimed = await self._claim()
        if claimed and self._total_in_flight() < self.settings.concurrency:
            return 0.0
        return await self._idle_for()

    async def run_until_idle(self, *, timeout_s: float = 30.0) -> None:
        """Deliver until nothing is due or in flight (for `gateway worker --once` and tests)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            claimed = await self._claim()
            if claimed == 0 and not self._tasks:
                return
            await asyncio.sleep(0.01)

    # --- claiming ----------------------------------------------------------------------------

    def _total_in_flight(self) -> int:
        return sum(self._in_flight.values())

    async def _idle_for(self) -> float:
        if self._tasks:
            return self.settings.poll_interval_s
        due = await self.store.next_due()
        if due is None:
            return self.settings.poll_interval_s
        return min(self.settings.poll_interval_s, max(0.0, (due - self.clock()).total_seconds()))

    async def _claim(self) -> int:
        if self._stopping or self._total_in_flight() >= self.settings.concurrency:
            return 0
        mono = time.monotonic()
        for inst in self.mappings.outbound_instances:
            # blocked() turns an open breaker whose pause is over into half-open (on the loop, not in a handler).
            self.breaker.blocked(inst.name, now=mono)
        claimed = await self.store.committer.submit(self._claim_many, mono)
        for delivery in claimed:
            self._start(delivery)
        self.metrics.in_flight.set(self._total_in_flight())
        return len(claimed)

    def _claim_many(self, tx: Tx, requests: list[float]) -> list:
        # Claims share the batch's transaction with accepts and attempt records: one writer, fewer commits. The
        # room is worked out here, in the transaction, after any acceptance earlier in the same batch took some.
        out = []
        for mono in requests:
            got: list[ClaimedDelivery] = []
            with self._slots:
                free = self.settings.concurrency - self._total_in_flight()
                rooms = {}
                for inst in self.mappings.outbound_instances:
                    if self.breaker.is_open(inst.name, now=mono):
                        rooms[inst.name] = 0
                        continue
                    limit = 1 if self.breaker.is_half_open(inst.name) else inst.max_in_flight
                    rooms[inst.name] = max(0, limit - self._in_flight[inst.name])
            now = self.clock()
            exclude = [name for name, room in rooms.items() if room < free]
            for name, room in rooms.items():
                if room <= 0 or room >= free or len(got) >= free:
                    continue
                # An instance with less room than `free` (max_in_flight, half-open) is claimed apart, so its limit
                # holds; a half-open one probes with a delivery that failed, not one never tried.
                limit = min(room, free - len(got))
                probes = self.breaker.probes(name) if self.breaker.is_half_open(name) else ()
                taken = self.store.claim_in(tx, worker=self.worker_id, now=now, limit=limit, lease=self.lease,
                                            only=(name,), ids=probes) if probes else []
                if not taken:
                    taken = self.store.claim_in(tx, worker=self.worker_id, now=now, limit=limit,
                                                lease=self.lease, only=(name,))
                got += taken
            if free - len(got) > 0:
                got += self.store.claim_in(tx, worker=self.worker_id, now=now, limit=free - len(got),
                                           lease=self.lease, exclude=exclude)
            self._hold(tx, got)
            out.append(got)
        return out

    # --- one attempt -------------------------------------------------------------------------

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        try:
            attempt = await self._attempt(delivery)
            await self._record(attempt)
        except Exception:  # noqa: BLE001
            # The claim stays; its lease brings the delivery back. Nothing is lost.
            log.exception("recording a delivery attempt failed", extra={"delivery_id": delivery.id})
        finally:
            self._release_slots((delivery.instance,))
            self.metrics.in_flight.set(self._total_in_flight())
            self.loop.wake()

    async def _attempt(self, delivery: ClaimedDelivery) -> _Attempt:
        instance = self.mappings.instance(delivery.instance)
        attempt = _Attempt(delivery, instance)
        if instance is None or not instance.enabled:
            attempt.failure = DeliveryFailure(f"instance {delivery.instance} is not configured or disabled",
                                              retryable=False)
            return attempt
        adapter = self.adapters.get(instance.counterpart)
        mappings = self.mappings.for_instance(instance)
        try:
            message = parse_message(delivery.content)
        except (ValidationError, ValueError) as exc:
            attempt.failure = DeliveryFailure(f"cannot encode for {instance.counterpart}: {exc}", retryable=False)
            return attempt
        attempt.case_id = message.case_id
        if adapter is None:
            attempt.failure = DeliveryFailure(
                f"cannot encode for {instance.counterpart}: no adapter for counterpart {instance.counterpart}",
                retryable=False)
            return attempt

        def encode() -> WireRequest:
            case = parse_message(delivery.case_content) if delivery.case_content else None
            context = EncodeContext(now=self.clock(), case=case if isinstance(case, CaseRegistered) else None)
            return adapter.encode(message, mappings=mappings, instance=instance, context=context)

        def decode(response: WireResponse, received_at: datetime) -> tuple[AnyMessage, ...]:
            return tuple(adapter.decode_response(response, mappings=mappings, request=message,
                                                 context=DecodeContext(received_at=received_at)))

        attempt.hop = await self.exchange.call(instance, encode=encode, decode=decode)
        attempt.failure = attempt.hop.failure
        return attempt

    def _settle(self, attempt: _Attempt, now: datetime) -> None:
        """Decide the delivery's next state from the attempt and the instance's retry policy."""
        d = attempt.delivery
        attempt.now = now
        if attempt.failure is None:
            attempt.state, attempt.reason = "delivered", None
            return
        decider = self._deciders.get(d.instance)
        first = d.first_attempt_at or attempt.sent_at or now
        decision = decider.decide(attempt.failure, attempt=d.attempts_since_replay, first_attempt_at=first,
                                  now=now) if decider else None
        if decision is not None and decision.retry_in is not None:
            attempt.state, attempt.reason = "pending", decision.reason
            attempt.next_at = now + timedelta(seconds=decision.retry_in)
        else:
            attempt.state, attempt.reason = "dead", decision.reason if decision else attempt.failure.reason

    async def _record(self, attempt: _Attempt) -> None:
        self._settle(attempt, self.clock())
        accepted = await self.store.committer.submit(self._record_many, attempt)
        for result in accepted:
            self.accepter.notify(result)
        self._account(attempt, attempt.state, (attempt.delivery.counterpart, attempt.delivery.instance))

    def _record_many(self, tx: Tx, batch: list[_Attempt]) -> list[list]:
        """Attempt rows, delivery states and the replies, for a batch of attempts, in one transaction."""
        owners = self.store.claim_owners(tx, [a.delivery.id for a in batch])
        self.store.finish_attempts(tx, [
            {"b_id": a.delivery.id, "b_worker": self.worker_id, "state": a.state,
             "next_attempt_at": a.next_at or a.now, "finished_at": a.now if a.state in ("delivered", "dead") else None,
             "last_status": a.response.status if a.response else None, "reason": a.reason}
            for a in batch
        ])
        self.store.insert_exchanges(tx, [
            hop_row(hop="attempt", message_id=a.delivery.message_id, delivery_id=a.delivery.id,
                    peer=a.delivery.instance, attempt=a.delivery.attempts, request_out_at=a.sent_at,
                    response_in_at=a.responded_at, response_out_at=a.now,
                    request_bytes=len(a.hop.request.body) if a.hop and a.hop.request else 0,
                    response_bytes=len(a.response.body) if a.response else None,
                    status_code=a.response.status if a.response else None,
                    result={"delivered": "delivered", "pending": "retry", "dead": "dead"}[a.state],
                    error=a.reason, case_id=a.case_id, signer=a.hop.signer if a.hop else None,
                    **(a.hop.wire_for_log() if a.hop else _nothing_sent(a)))
            for a in batch
        ])
        # A worker that lost its claim records the attempt but leaves the replies to the new owner.
        replies: list[Incoming] = []
        counts: list[int] = []
        for a in batch:
            mine = owners.get(a.delivery.id) == self.worker_id
            items = [
                Incoming(message=reply, source=a.delivery.instance, received_at=a.responded_at or a.now,
                         request_bytes=len(a.response.body) if a.response else 0, hop="reply")
                for reply in (a.replies if mine else ())
            ]
            replies.extend(items)
            counts.append(len(items))
        results = self.accepter.accept_many(tx, replies) if replies else []
        out: list[list] = []
        for n in counts:
            out.append([r for r in results[:n] if not isinstance(r, Exception)])
            results = results[n:]
        return out

    def _account(self, attempt: _Attempt, state: str, labels: tuple[str, str]) -> None:
        d = attempt.delivery
        instance = attempt.instance
        mono = time.monotonic()
        if attempt.sent_at and attempt.responded_at:
            self.metrics.attempt_latency.labels(*labels).observe((attempt.responded_at - attempt.sent_at).total_seconds())
        if state == "delivered" or (attempt.response is not None and attempt.failure is not None
                                    and not attempt.failure.retryable):
            # An answer that is final (delivered, or refused for good) shows the counterpart is there.
            if instance:
                self.breaker.success(instance.name)
                self.metrics.breaker_open.labels(instance.name).set(0)
        if attempt.failure is not None:
            self.metrics.attempt_failures.labels(*labels, reason_class(attempt.failure.reason)).inc()
        if state == "delivered":
            self.metrics.delivered.labels(*labels).inc()
        elif state == "pending":
            self.metrics.retried.labels(*labels).inc()
        else:
            self.metrics.dead.labels(*labels).inc()
        if attempt.failure and attempt.failure.retryable and instance:
            if self.breaker.failure(instance.name, instance.breaker, now=mono, delivery_id=d.id):
                self.metrics.breaker_open.labels(instance.name).set(1)
                log.warning("circuit opened", extra={"instance": instance.name})
        log.log(
            logging.DEBUG if state == "delivered" else logging.INFO,
            "delivery attempt",
            extra={"delivery_id": d.id, "message_id": d.message_id, "instance": d.instance,
                   "attempt": d.attempts, "outcome": state,
                   "status": attempt.response.status if attempt.response else None,
                   "error": attempt.failure.reason if attempt.failure else None},
        )


def _nothing_sent(a: _Attempt) -> dict[str, object]:
    """The log's wire keys for an attempt that never reached the wire."""
    if a.instance is not None and not a.instance.log_bodies:
        return {"request_hash": None, "response_hash": None}
    return {"request_raw": None, "response_raw": None}
