"""The live SLA report: the same engine over the store's events, read as the events export writes them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from gateway.audit.export import iter_event_lines
from gateway.sla.calendar import to_us
from gateway.sla.engine import SlaReport, compute_report, parse_event_line, summarize
from gateway.sla.policy import SlaConfig
from gateway.storage.store import Store


async def live_report(
    *, store: Store, config: SlaConfig, as_of: datetime, rule: str | None = None,
    counterpart: str | None = None, region: str | None = None, since: datetime | None = None,
    until: datetime | None = None,
) -> SlaReport:
    """Compliance as of `as_of`; filters keep the legs asked for (period = the leg's start) and re-sum them.

    Events go through the events export's own line format, so `gateway sla report --events` on an
    export recomputes exactly this report."""
    events = [parse_event_line(line, line_no=n) async for n, line in _numbered(iter_event_lines(store=store))]
    report = compute_report(events=events, policy=config.policy, calendar=config.calendar, kinds=config.kinds,
                            as_of=as_of)
    if not any((rule, counterpart, region, since, until)):
        return report
    since_us = None if since is None else to_us(since)
    until_us = None if until is None else to_us(until)
    legs = [
        leg for leg in report.legs
        if (rule is None or leg.rule == rule)
        and (counterpart is None or leg.counterpart == counterpart)
        and (region is None or leg.region == region)
        and (since_us is None or leg.start_at >= since_us)
        and (until_us is None or leg.start_at <= until_us)
    ]
    return replace(report, legs=legs, summary=summarize(legs, rules=list(config.policy.rules)))


async def live_case_report(*, store: Store, config: SlaConfig, case_id: str, as_of: datetime) -> SlaReport:
    """One case's legs as of `as_of`: the engine over that case's events only (legs never span cases, and a
    reply names the case of the referral it answers), so it equals the whole report's legs of the case."""
    events = [parse_event_line(line, line_no=n)
              async for n, line in _numbered(iter_event_lines(store=store, case_id=case_id))]
    return compute_report(events=events, policy=config.policy, calendar=config.calendar, kinds=config.kinds,
                          as_of=as_of)


async def _numbered(lines):  # noqa: ANN001, ANN202
    n = 0
    async for line in lines:
        n += 1
        yield n, line
