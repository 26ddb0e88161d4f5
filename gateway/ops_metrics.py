"""What an operator looks for first, read at each scrape: backlog, circuits, SLA, checkpoints, certificates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from cryptography import x509
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.loops import Loop
from gateway.mapping import Mappings
from gateway.storage import operations as reads
from gateway.storage.db import Engines
from security.keys import KeyStore
from security.parties import PinnedKey

BACKLOG_STATES = ("pending", "in_flight")
VERDICTS = ("intact", "broken", "failed")


class Breakers(Protocol):
    def opened_at(self, instance: str) -> float | None: ...


class Escalations(Protocol):
    overdue_by_rule: dict[str, int] | None


class Checkpoints(Protocol):
    started_at: float
    last_success: float | None
    signing_failures: int


class VerificationJobs(Protocol):
    def latest_finished(self) -> Any | None: ...


class OperationsMetrics:
    """A collector for the registry. A scrape cannot await, so the one store read (backlog and dead letters per
    instance, a GROUP BY on the deliveries' state index) is cached by a loop every `interval_s`; ages are worked
    out at the scrape from the cached times, so they keep growing between refreshes."""

    def __init__(self, *, engines: Engines, mappings: Callable[[], Mappings], breakers: Breakers,
                 pins: Callable[[], dict[str, tuple[PinnedKey, ...]]], keys: KeyStore | None,
                 escalations: Escalations, checkpoints: Checkpoints | None,
                 verification: Callable[[], VerificationJobs | None], interval_s: float = 10.0) -> None:
        self.engines = engines
        self.mappings = mappings
        self.breakers = breakers
        self.pins = pins
        self.keys = keys
        self.escalations = escalations
        self.checkpoints = checkpoints
        self.verification = verification
        self.loop = Loop("operations-metrics", self._step, interval_s=interval_s, required=False)
        self._backlog: dict[str, dict[str, Any]] | None = None
        self._own: list[tuple[str, float]] = []  # (kid, not_after as Unix time) of the gateway's keys in use
        self._certificates: dict[str, x509.Certificate | None] = {}  # per kid: a kid's certificate never changes

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()  # a read-only pass: safe to cut

    async def _step(self) -> None:
        self._backlog = await reads.instance_backlog(self.engines)
        if self.keys is not None:
            self._own = self._own_certificates(self.keys)

    def _own_certificates(self, keys: KeyStore) -> list[tuple[str, float]]:
        keys.refresh()  # a rotation made by `gateway keys` in another process
        now = datetime.now(timezone.utc)
        out = []
        for info in keys.list():
            if not info.valid_at(now):
                continue
            if info.kid not in self._certificates:
                self._certificates[info.kid] = keys.certificate(info.kid)
            cert = self._certificates[info.kid]
            if cert is not None:
                out.append((info.kid, cert.not_valid_after_utc.timestamp()))
        return out

    # --- the collector ----------------------------------------------------------------------------

    def describe(self) -> list:
        return []  # values are read at collect time; nothing to check at registration

    def collect(self) -> Iterable[Any]:
        now, mono = time.time(), time.monotonic()
        instances = [i.name for i in self.mappings().counterparts.instances]
        yield from self._backlog_families(instances, now)
        circuit = GaugeMetricFamily("gateway_circuit_open_seconds", "Seconds an instance's circuit breaker has been "
                                    "open without closing (reopened by failed probes); 0 while closed; this "
                                    "process's breaker", labels=["counterpart_instance"])
        for name in instances:
            opened = self.breakers.opened_at(name)
            circuit.add_metric([name], 0.0 if opened is None else max(0.0, mono - opened))
        yield circuit
        overdue = GaugeMetricFamily("gateway_sla_overdue_legs", "SLA legs past their deadline (each escalated), per "
                                    "rule, as of the escalation scheduler's last pass", labels=["rule"])
        for rule, count in sorted((self.escalations.overdue_by_rule or {}).items()):
            overdue.add_metric([rule], count)
        yield overdue
        yield from self._checkpoint_families(now)
        yield self._certificate_family(now)
        yield from self._verification_families()

    def _backlog_families(self, instances: list[str], now: float) -> Iterable[Any]:
        waiting = GaugeMetricFamily("gateway_backlog_deliveries", "Deliveries waiting for an instance, in the store "
                                    "(every process reports the same: take max)",
                                    labels=["counterpart_instance", "state"])
        oldest = GaugeMetricFamily("gateway_backlog_oldest_age_seconds", "Age of the oldest delivery waiting for an "
                                   "instance (pending or in flight); 0 when none waits",
                                   labels=["counterpart_instance"])
        dead = GaugeMetricFamily("gateway_dead_letters", "Dead-lettered deliveries waiting for a person, in the store",
                                 labels=["counterpart_instance"])
        if self._backlog is not None:  # before the first read, nothing: a 0 would say the backlog is known empty
            for name in sorted(set(instances) | set(self._backlog)):
                entry = self._backlog.get(name, {})
                for state in BACKLOG_STATES:
                    waiting.add_metric([name, state], entry.get(state, 0))
                since = entry.get("oldest_waiting_at")
                oldest.add_metric([name], 0.0 if since is None else max(0.0, now - since.timestamp()))
                dead.add_metric([name], entry.get("dead", 0))
        yield from (waiting, oldest, dead)

    def _checkpoint_families(self, now: float) -> Iterable[Any]:
        last = GaugeMetricFamily("gateway_checkpoint_last_success_timestamp_seconds", "Unix time the exchange log's "
                                 "head was last covered by a signed checkpoint (written, or already covered)")
        age = GaugeMetricFamily("gateway_checkpoint_age_seconds", "Seconds since the exchange log's head was last "
                                "covered by a signed checkpoint (since start until the first)")
        failures = CounterMetricFamily("gateway_checkpoint_signing_failures", "Checkpoints that could not be signed")
        c = self.checkpoints
        if c is not None:
            if c.last_success is not None:
                last.add_metric([], c.last_success)
            age.add_metric([], max(0.0, now - (c.last_success or c.started_at)))
            failures.add_metric([], c.signing_failures)
        yield from (last, age, failures)

    def _certificate_family(self, now: float) -> GaugeMetricFamily:
        expiry = GaugeMetricFamily("gateway_certificate_expiry_seconds", "Seconds until a certificate expires "
                                   "(negative: expired); kind pinned (a counterpart instance's) or own (the "
                                   "gateway's key)", labels=["counterpart_instance", "kid", "kind"])
        for instance, pins in sorted(self.pins().items()):
            for pin in pins:
                if pin.certificate is not None:
                    expiry.add_metric([instance, pin.kid, "pinned"], pin.certificate.not_valid_after_utc.timestamp()
                                      - now)
        for kid, not_after in self._own:
            expiry.add_metric(["", kid, "own"], not_after - now)
        return expiry

    def _verification_families(self) -> Iterable[Any]:
        verdict = GaugeMetricFamily("gateway_chain_verification", "1 for the verdict of this process's last chain "
                                    "verification (the console's integrity page): intact, broken (a record does "
                                    "not verify) or failed (could not finish)", labels=["result"])
        when = GaugeMetricFamily("gateway_chain_verification_timestamp_seconds",
                                 "Unix time this process's last chain verification finished")
        jobs = self.verification()
        job = jobs.latest_finished() if jobs is not None else None
        if job is not None:
            for result in VERDICTS:
                verdict.add_metric([result], 1.0 if job.state == result else 0.0)
            if job.finished_at is not None:
                when.add_metric([], job.finished_at.timestamp())
        yield from (verdict, when)
