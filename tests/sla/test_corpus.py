"""A generated corpus whose verdicts are decided first and the events written to produce them."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from gateway.sla.calendar import from_us, to_us
from tests.sla.factory import CONFIG, UTC, legs, msg, report

AS_OF = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = {"legal.first_action": timedelta(hours=24), "housing.placement": timedelta(hours=48),
          "economic.track": timedelta(days=7), "medical.routing": timedelta(days=30),
          "critical.documents": timedelta(days=30), "critical.income": timedelta(days=60)}


class Case:
    """One case: the messages written and, per leg, the verdict and stop intended."""

    def __init__(self, rng: random.Random, n: int) -> None:
        self.rng = rng
        self.case_id = f"KRG-2026-{n:06d}"
        self.messages: list[dict[str, Any]] = []
        self.expected: dict[tuple[str, str], tuple[str, str | None]] = {}
        self.serial = 0

    def add(self, type_: str, at: datetime, **body: Any) -> dict[str, Any]:
        m = msg(type_, self.case_id, at, **body)
        self.messages.append(m)
        return m

    def ref(self) -> str:
        self.serial += 1
        return f"{self.case_id}-F{self.serial}"

    def jitter(self, lo: timedelta, hi: timedelta) -> timedelta:
        """A random span in [lo, hi], to the microsecond."""
        span = (hi - lo) // timedelta(microseconds=1)
        return lo + timedelta(microseconds=self.rng.randint(0, max(span, 0)))

    def verdict(self, start: datetime, deadline: datetime, choices: tuple[str, ...] = ("met", "breached", "open",
                                                                                        "overdue")) -> str:
        # Only verdicts the timing allows: before the deadline has passed a leg is met or open; after, anything
        # but open.
        allowed = ("met", "open") if deadline >= AS_OF else ("met", "breached", "overdue")
        return self.rng.choice([v for v in choices if v in allowed])

    def stop_time(self, verdict: str, start: datetime, deadline: datetime) -> datetime | None:
        if verdict == "met":
            return start + self.jitter(timedelta(0), min(deadline, AS_OF) - start)
        if verdict == "breached":
            return deadline + self.jitter(timedelta(microseconds=1), AS_OF - deadline)
        if verdict == "open" and self.rng.random() < 0.3:
            return AS_OF + self.jitter(timedelta(seconds=1), timedelta(days=2))  # not yet happened as of the report
        return None

    def expect(self, rule: str, start: dict[str, Any], verdict: str, stop: dict[str, Any] | None) -> None:
        stopped = verdict in ("met", "breached")
        self.expected[(rule, start["message_id"])] = (verdict, stop["message_id"] if stopped and stop else None)


def build_case(rng: random.Random, n: int) -> Case:
    c = Case(rng, n)
    reg_at = AS_OF - c.jitter(timedelta(hours=1), timedelta(days=100))
    reg = c.add("case.registered", reg_at, region=rng.choice(["KZ-35", "KZ-71", "KZ-75"]))

    # ipr: plan.approved; a plan dated before the registration is never eligible.
    ipr_deadline = from_us(CONFIG.calendar.working_days_deadline_us(to_us(reg_at), 3))
    v = c.verdict(reg_at, ipr_deadline)
    at = c.stop_time(v, reg_at, ipr_deadline)
    stop = c.add("plan.approved", at, plan_id=f"P-{n}") if at else None
    if rng.random() < 0.2:
        c.add("plan.approved", reg_at - c.jitter(timedelta(seconds=1), timedelta(days=3)), plan_id=f"P0-{n}")
    c.expect("ipr", reg, v, stop)

    # Unlinked referrals stop the case-level rules; each rule's kind is used by no other rule's stop here.
    for rule, kind, reply in (("medical.routing", "health.screening", "referral.accepted"),
                              ("critical.documents", "document.restore", "referral.completed")):
        deadline = reg_at + LIMITS[rule]
        v = c.verdict(reg_at, deadline)
        at = c.stop_time(v, reg_at, deadline)
        stop = None
        if at:
            ref = c.ref()
            c.add("referral.requested", reg_at + (at - reg_at) / 2, referral_id=ref, kind=kind)
            stop = c.add(reply, at, referral_id=ref)
        if rng.random() < 0.3:  # a rejection inside the limit stops nothing
            ref = c.ref()
            c.add("referral.requested", reg_at, referral_id=ref, kind=kind)
            c.add("referral.rejected", reg_at + (deadline - reg_at) / 3, referral_id=ref, reason="no capacity")
        c.expect(rule, reg, v, stop)

    # critical.income: a social contract; an economic risk (whose accepted employment.track also counts for
    # critical.income) only comes after that stop, so the earliest income stop stays the intended one.
    deadline = reg_at + LIMITS["critical.income"]
    v = c.verdict(reg_at, deadline)
    income_at = c.stop_time(v, reg_at, deadline)
    stop = None
    if income_at:
        ref = c.ref()
        c.add("referral.requested", reg_at, referral_id=ref, kind="social.contract")
        stop = c.add("referral.accepted", income_at, referral_id=ref)
    c.expect("critical.income", reg, v, stop)

    risk_rules = [("legal.first_action", "legal", "registration.temporary", "referral.accepted"),
                  ("housing.placement", "housing", "shelter.placement", "referral.completed")]
    if income_at and v in ("met", "breached"):
        risk_rules.append(("economic.track", "economic", "employment.track", "referral.accepted"))
    for rule, domain, kind, reply in risk_rules:
        if rng.random() < 0.4:
            continue
        earliest = income_at if domain == "economic" else reg_at
        wanted_open = rng.random() < 0.25 and AS_OF - LIMITS[rule] > earliest
        if wanted_open:
            risk_at = AS_OF - c.jitter(timedelta(seconds=1), LIMITS[rule] - timedelta(seconds=1))
        else:
            risk_at = earliest + c.jitter(timedelta(seconds=1), AS_OF - earliest)
        risk_id = f"{c.case_id}-{domain}"
        start = c.add("risk.detected", risk_at, risk_id=risk_id, domain=domain, level=rng.choice(["R2", "R3"]),
                      trigger="survey")
        deadline = risk_at + LIMITS[rule]
        v = c.verdict(risk_at, deadline)
        at = c.stop_time(v, risk_at, deadline)
        stop = None
        ref = c.ref()
        c.add("referral.requested", risk_at, referral_id=ref, kind=kind, risk_id=risk_id)
        if at:
            stop = c.add(reply, at, referral_id=ref)
        if rng.random() < 0.4:
            # A reply for another risk of the same domain stops nothing of this one. That risk is R1: it starts
            # no housing leg, but legal and economic legs start at any level, and its own reply meets it.
            other = f"{risk_id}-other"
            other_start = c.add("risk.detected", risk_at, risk_id=other, domain=domain, level="R1", trigger="survey")
            oref = c.ref()
            c.add("referral.requested", risk_at, referral_id=oref, kind=kind, risk_id=other)
            other_stop = c.add(reply, risk_at + c.jitter(timedelta(0), min(LIMITS[rule], AS_OF - risk_at)),
                               referral_id=oref)
            if domain != "housing":
                c.expect(rule, other_start, "met", other_stop)
        c.expect(rule, start, v, stop)

    for _ in range(rng.randint(0, 2)):  # re-sent messages: the same message_id counts once
        c.messages.append(dict(rng.choice(c.messages)))
    rng.shuffle(c.messages)  # arrival order says nothing
    return c


def test_the_engine_agrees_with_a_generated_corpus_leg_by_leg() -> None:
    rng = random.Random(20260301)
    cases = [build_case(rng, n) for n in range(1, 251)]
    rep = report([m for c in cases for m in c.messages], AS_OF)
    got = {(leg["case_id"], leg["rule"], leg["start_message_id"]): (leg["status"], leg["stop_message_id"])
           for leg in legs(rep)}
    expected = {(c.case_id, rule, start): v for c in cases for (rule, start), v in c.expected.items()}
    assert len(got) == len(legs(rep))  # one leg per start and rule
    mismatches = {k: (got.get(k), expected.get(k)) for k in expected.keys() | got.keys() if got.get(k) != expected.get(k)}
    assert not mismatches
    statuses = Counter(status for status, _ in expected.values())
    assert all(statuses[s] >= 50 for s in ("met", "breached", "open", "overdue")), statuses  # every verdict exercised
    for rule, counts in rep.summary.items():
        mine = Counter(status for (r, _), (status, _) in
                       ((k, v) for c in cases for k, v in c.expected.items()) if r == rule)
        assert {s: counts[s] for s in ("met", "breached", "open", "overdue")} == {
            s: mine[s] for s in ("met", "breached", "open", "overdue")}


def test_the_corpus_report_does_not_depend_on_arrival_order() -> None:
    rng = random.Random(7)
    messages = [m for n in range(1, 60) for m in build_case(rng, n).messages]
    first = report(messages, AS_OF).to_json()
    rng.shuffle(messages)
    assert report(messages, AS_OF).to_json() == first
