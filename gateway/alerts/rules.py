"""The alert rules: pure functions from what the gateway knows (Facts) to the conditions that hold now."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from gateway.alerts.model import Condition
from gateway.mapping import AlertThresholds


@dataclass(frozen=True)
class OverdueLeg:
    rule: str  # the SLA rule
    case_id: str
    deadline_at: datetime
    counterpart: str | None = None


@dataclass(frozen=True)
class DeadLetters:
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest_at: datetime


@dataclass(frozen=True)
class CertificateFact:
    subject: str  # "pin:<instance>:<fingerprint>" or "own:<kid>"
    owner: str  # an instance name, or "gateway"
    name: str  # the certificate's subject DN
    not_after: datetime


@dataclass(frozen=True)
class LoopFact:
    failing: bool
    error: str | None = None
    failing_for_s: float = 0.0


@dataclass(frozen=True)
class VerificationFact:
    state: str  # intact | broken | failed (a running job is not a fact yet)
    finished_at: datetime | None = None
    seq: int | None = None  # the first bad record
    problem: str | None = None


@dataclass
class Facts:
    """One pass's view; a field left None means its source could not be read, and its rule is not evaluated."""

    now: datetime
    overdue_legs: list[OverdueLeg] | None = None
    dead_letters: dict[str, DeadLetters] | None = None
    backlog: dict[str, Backlog] | None = None
    breakers: dict[str, float] | None = None  # instance -> seconds its circuit has been open without closing
    certificates: list[CertificateFact] | None = None
    checkpoints: LoopFact | None = None
    verification: VerificationFact | None = None
    errors: dict[str, str] = field(default_factory=dict)  # source -> why it could not be read


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def sla_overdue(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.overdue_legs is None:
        return None
    by_rule: dict[str, list[OverdueLeg]] = defaultdict(list)
    for leg in facts.overdue_legs:
        by_rule[leg.rule].append(leg)
    out = []
    for rule, legs in sorted(by_rule.items()):
        legs.sort(key=lambda leg: leg.deadline_at)
        out.append(Condition(
            "sla_overdue", rule, "warning", f"SLA {rule}: legs past their deadline (escalated)", len(legs),
            legs[0].deadline_at,
            {"cases": [leg.case_id for leg in legs[:20]], "oldest_deadline_at": _iso(legs[0].deadline_at),
             "counterparts": sorted({leg.counterpart for leg in legs if leg.counterpart})}))
    return out


def dead_letter(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.dead_letters is None:
        return None
    quiet = timedelta(seconds=t.dead_letter_quiet_s)
    return [Condition("dead_letter", instance, "critical", f"{instance}: deliveries dead-lettered, a person must "
                                                           f"look at them", d.count, d.first_at,
                      {"last_at": _iso(d.last_at), "quiet_s": t.dead_letter_quiet_s})
            for instance, d in sorted(facts.dead_letters.items())
            if d.count > 0 and facts.now - d.last_at < quiet]


def circuit_open(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.breakers is None:
        return None
    return [Condition("circuit_open", instance, "critical",
                      f"{instance}: circuit open for more than {t.circuit_open_s:g} s: the counterpart is down",
                      1, facts.now - timedelta(seconds=open_for), {"threshold_s": t.circuit_open_s})
            for instance, open_for in sorted(facts.breakers.items()) if open_for >= t.circuit_open_s]


def backlog_age(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.backlog is None:
        return None
    limit = timedelta(seconds=t.backlog_age_s)
    return [Condition("backlog_age", instance, "warning",
                      f"{instance}: deliveries waiting longer than {t.backlog_age_s:g} s", b.count, b.oldest_at,
                      {"oldest_at": _iso(b.oldest_at)})
            for instance, b in sorted(facts.backlog.items()) if b.count > 0 and facts.now - b.oldest_at >= limit]


def certificate_expiry(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.certificates is None:
        return None
    out = []
    warn = timedelta(days=t.certificate_days)
    for cert in sorted(facts.certificates, key=lambda c: c.subject):
        left = cert.not_after - facts.now
        detail = {"owner": cert.owner, "certificate": cert.name, "not_after": _iso(cert.not_after)}
        if left <= timedelta(0):
            out.append(Condition("certificate_expiry", cert.subject, "critical",
                                 f"{cert.owner}: certificate expired {_iso(cert.not_after)}", 1, cert.not_after,
                                 detail))
        elif left <= warn:
            out.append(Condition("certificate_expiry", cert.subject, "warning",
                                 f"{cert.owner}: certificate expires {_iso(cert.not_after)} "
                                 f"(within {t.certificate_days:g} days)", 1, facts.now, detail))
    return out


def checkpoint_signing(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.checkpoints is None:
        return None
    c = facts.checkpoints
    if not c.failing:
        return []
    return [Condition("checkpoint_signing", "exchange-log", "critical",
                      "signed checkpoints of the exchange log are not being written", 1,
                      facts.now - timedelta(seconds=c.failing_for_s), {"error": c.error})]


def chain_verification(facts: Facts, t: AlertThresholds) -> list[Condition] | None:
    if facts.verification is None:
        return None
    v = facts.verification
    if v.state == "broken":
        return [Condition("chain_verification", "exchange-log", "critical",
                          f"the exchange log's chain does not verify: first bad record {v.seq}", 1,
                          v.finished_at or facts.now, {"seq": v.seq, "problem": v.problem})]
    if v.state == "failed":
        return [Condition("chain_verification", "exchange-log", "warning",
                          "the exchange log's verification could not finish", 1, v.finished_at or facts.now,
                          {"problem": v.problem})]
    return []


Rule = Callable[[Facts, AlertThresholds], "list[Condition] | None"]
RULES: dict[str, Rule] = {
    "sla_overdue": sla_overdue,
    "dead_letter": dead_letter,
    "circuit_open": circuit_open,
    "backlog_age": backlog_age,
    "certificate_expiry": certificate_expiry,
    "checkpoint_signing": checkpoint_signing,
    "chain_verification": chain_verification,
}


def evaluate(facts: Facts, thresholds: AlertThresholds, *, disabled: tuple[str, ...] = ()
             ) -> tuple[list[Condition], set[str]]:
    """Every enabled rule's conditions, and the rules that could be evaluated (their sources answered)."""
    conditions: list[Condition] = []
    evaluated: set[str] = set()
    for name, rule in RULES.items():
        if name in disabled:  # evaluated as all clear: a rule switched off resolves what it had raised
            evaluated.add(name)
            continue
        found = rule(facts, thresholds)
        if found is None:
            continue
        evaluated.add(name)
        conditions.extend(found)
    return conditions, evaluated
