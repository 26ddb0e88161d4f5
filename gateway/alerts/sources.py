"""Where the alert rules' facts come from: store reads and the running components, each read on its own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from gateway.alerts.model import Alert
from gateway.alerts.rules import (
    Backlog,
    CertificateFact,
    DeadLetters,
    Facts,
    LoopFact,
    OverdueLeg,
    VerificationFact,
)
from gateway.mapping import AlertThresholds, Mappings
from gateway.sla.live import live_report
from gateway.sla.policy import SlaConfig
from gateway.storage import alerts as reads
from gateway.storage.store import Store
from security.keys import KeyStore
from security.parties import PinnedKey

log = logging.getLogger("gateway.alerts")


class Breakers(Protocol):
    def opened_at(self, instance: str) -> float | None: ...


class LoopState(Protocol):
    state: str
    last_error: str | None

    def snapshot(self) -> dict[str, Any]: ...


class VerificationJobs(Protocol):
    """The console's verification jobs (gateway.audit.integrity.VerifyJobs): the latest one's outcome."""

    def latest(self) -> Any | None: ...


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, timezone.utc)


class GatewaySources:
    """Reads each source apart: one that fails leaves its rule unevaluated this pass (its alerts stay)."""

    def __init__(self, *, store: Store, sla: SlaConfig, mappings: Callable[[], Mappings],
                 breakers: Breakers | None, pins: Callable[[], dict[str, tuple[PinnedKey, ...]]],
                 keys: KeyStore | None, checkpoints: LoopState | None,
                 verification: Callable[[], VerificationJobs | None]) -> None:
        self.store = store
        self.sla = sla
        self.mappings = mappings
        self.breakers = breakers
        self.pins = pins
        self.keys = keys
        self.checkpoints = checkpoints
        self.verification = verification

    async def gather(self, *, now: datetime, open_alerts: list[Alert], thresholds: AlertThresholds) -> Facts:
        facts = Facts(now=now)
        engines = self.store.engines

        async def overdue() -> list[OverdueLeg]:
            report = await live_report(store=self.store, config=self.sla, as_of=now)
            return [OverdueLeg(leg.rule, leg.case_id, _utc(leg.deadline_at), leg.counterpart)
                    for leg in report.legs if leg.status == "overdue"]

        async def dead() -> dict[str, DeadLetters]:
            started = {a.subject: a.started_at for a in open_alerts if a.rule == "dead_letter" and a.open}
            found = await reads.dead_letter_counts(
                engines, since=now - timedelta(seconds=thresholds.dead_letter_quiet_s), per_instance=started)
            return {k: DeadLetters(*v) for k, v in found.items()}

        async def waiting() -> dict[str, Backlog]:
            return {k: Backlog(*v) for k, v in (await reads.backlog(engines)).items()}

        for name, read in (("overdue_legs", overdue), ("dead_letters", dead), ("backlog", waiting)):
            try:
                setattr(facts, name, await read())
            except Exception as exc:  # noqa: BLE001  (that rule waits for the next pass)
                facts.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        for name, read_now in (("breakers", self._breakers), ("certificates", lambda: self._certificates(now)),
                               ("checkpoints", self._checkpoints), ("verification", self._verification)):
            try:
                setattr(facts, name, read_now())
            except Exception as exc:  # noqa: BLE001
                facts.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        if facts.errors:
            log.warning("alert sources not read this pass", extra={"errors": facts.errors})
        return facts

    def _breakers(self) -> dict[str, float] | None:
        if self.breakers is None:
            return None
        mono = time.monotonic()
        out = {}
        for inst in self.mappings().counterparts.instances:  # the alert webhooks' own circuits are not alerts
            opened = self.breakers.opened_at(inst.name)
            if opened is not None:
                out[inst.name] = max(0.0, mono - opened)
        return out

    def _certificates(self, now: datetime) -> list[CertificateFact]:
        out = []
        for instance, pins in sorted(self.pins().items()):
            for pin in pins:
                if pin.certificate is not None:
                    out.append(CertificateFact(f"pin:{instance}:{(pin.fingerprint or pin.kid)[:16]}", instance,
                                               pin.certificate.subject.rfc4514_string(),
                                               pin.certificate.not_valid_after_utc))
        if self.keys is not None:
            self.keys.refresh()  # a rotation made by `gateway keys` in another process
            for vk in self.keys.verification_keys(now=now):
                if vk.certificate is not None:
                    out.append(CertificateFact(f"own:{vk.kid[:16]}", "gateway", vk.certificate.subject.rfc4514_string(),
                                               vk.certificate.not_valid_after_utc))
        return out

    def _checkpoints(self) -> LoopFact | None:
        if self.checkpoints is None:
            return None
        snap = self.checkpoints.snapshot()
        failing = self.checkpoints.state == "down"
        return LoopFact(failing, self.checkpoints.last_error if failing else None,
                        float(snap.get("down_for_s", 0.0)))

    def _verification(self) -> VerificationFact | None:
        jobs = self.verification()
        job = jobs.latest() if jobs is not None else None
        if job is None or job.state == "running":
            return None  # nothing known yet: an earlier verdict stands
        problem = job.report.problem if job.report is not None else None
        return VerificationFact(job.state, job.finished_at, problem.seq if problem else None,
                                (problem.detail if problem else job.error))
