"""The incremental report equals compute_report over the same events, whatever arrives when and whatever as_of."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from bench.sla_report import generate
from gateway.sla.engine import IncrementalReport, SlaReport, compute_report
from gateway.sla.events import Event, parse_event_lines
from tests.sla.factory import CONFIG, UTC, lines, msg, t


def _offline(events: list[Event], as_of: datetime) -> SlaReport:
    return compute_report(events=events, policy=CONFIG.policy, calendar=CONFIG.calendar, kinds=CONFIG.kinds,
                          as_of=as_of)


def _same(live: SlaReport, offline: SlaReport) -> None:
    assert live.legs == offline.legs  # the whole tuples: counterpart and region too
    assert live.summary == offline.summary
    assert live.kpi == offline.kpi
    assert live.to_json() == offline.to_json()


def _incremental() -> IncrementalReport:
    return IncrementalReport(policy=CONFIG.policy, calendar=CONFIG.calendar, kinds=CONFIG.kinds)


def test_generated_year_arriving_in_batches_equals_the_offline_report_at_every_step() -> None:
    events = list(parse_event_lines(generate(6000, seed=11)))  # re-sends and shuffled arrival included
    rng = random.Random(5)
    live = _incremental()
    fixed = [datetime(2025, 4, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)]
    done = 0
    while done < len(events):
        step = rng.randint(1, 1500)
        live.add(events[done:done + step])
        done += step
        moving = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=rng.uniform(0, 500))
        for as_of in (*fixed, moving, fixed[1]):  # the repeat is answered from the kept facts
            _same(live.report(as_of=as_of), _offline(events[:done], as_of))
    assert live.count == len({e.message_id for e in events})


def test_replies_before_their_request_and_a_referral_requested_from_two_cases() -> None:
    a, b = "KRG-2026-000001", "KRG-2026-000002"
    reg = t("2026-03-02T09:00:00+05:00")
    risk = {"risk_id": "R-1", "domain": "housing", "level": "R3", "trigger": "homeless"}
    messages = [
        msg("case.registered", a, reg),
        msg("case.registered", b, reg + timedelta(hours=1)),
        # accepted before any request is known: unmatched until the request arrives
        msg("referral.accepted", a, reg + timedelta(hours=30), referral_id="F-1"),
        # dated before its request: counted once its request is dated up to as_of
        msg("referral.completed", a, reg + timedelta(hours=2), referral_id="F-1", outcome="done"),
        msg("risk.detected", a, reg + timedelta(hours=3), **risk),
        msg("referral.requested", a, reg + timedelta(hours=4), referral_id="F-1", kind="shelter.placement",
            risk_id="R-1"),
        msg("risk.detected", b, reg + timedelta(hours=2), **{**risk, "risk_id": "R-2"}),
        # the same referral requested earlier from another case: the replies move to that case
        msg("referral.requested", b, reg + timedelta(hours=3), referral_id="F-1", kind="shelter.placement",
            risk_id="R-2"),
        msg("referral.accepted", b, reg + timedelta(hours=50), referral_id="F-9"),  # never requested
    ]
    events = list(parse_event_lines(lines(messages)))
    live = _incremental()
    for n, e in enumerate(events, start=1):
        live.add([e])
        for hours in (0.5, 2.5, 3.5, 4.5, 30, 60, 24 * 200):
            as_of = reg + timedelta(hours=hours)
            _same(live.report(as_of=as_of), _offline(events[:n], as_of))
    assert live.report(as_of=reg + timedelta(hours=60)).kpi["unmatched_replies"] == 1
