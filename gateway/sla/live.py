"""The live SLA report: the same engine over the store's events, read as the events export writes them."""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import replace
from datetime import datetime
from weakref import WeakKeyDictionary

from gateway.audit.export import event_line, iter_event_lines
from gateway.sla.calendar import to_us
from gateway.sla.engine import IncrementalReport, SlaReport, compute_report, summarize
from gateway.sla.events import parse_event_line
from gateway.sla.policy import SlaConfig
from gateway.storage.store import Store

# A row id skipped over may still commit (PostgreSQL hands out ids before commit): looked for this long.
GAP_WAIT_S = 120.0
_MAX_GAP = 10_000  # a jump wider than this is not waited for (a sequence moved on, not a transaction in flight)


class _Feed:
    """One store's events as this process has read them: messages are append-only, so each report reads only
    the rows added since the last one, and the engine recomputes only the cases they touch."""

    def __init__(self, config: SlaConfig) -> None:
        self.config = config
        self.engine = IncrementalReport(policy=config.policy, calendar=config.calendar, kinds=config.kinds)
        self.after = 0
        self.gaps: dict[int, float] = {}  # row id -> when first missed
        self.lock = asyncio.Lock()
        self.interned: dict[str, str] = {}
        self.last: tuple[int, int, SlaReport] | None = None  # (as_of µs, events, report): a repeated view

    async def refresh(self, store: Store) -> None:
        async with self.lock:
            now = time.monotonic()
            gaps = {row: at for row, at in self.gaps.items() if now - at < GAP_WAIT_S}
            after, events = self.after, []
            async for row_id, content, received_at in store.messages_after(after=after, also=tuple(gaps)):
                gaps.pop(row_id, None)
                if row_id > after:
                    if row_id - after <= _MAX_GAP:
                        gaps.update((missed, now) for missed in range(after + 1, row_id))
                    after = row_id
                if content is not None:
                    # the events export's own line, so the report stays what `gateway sla report --events` gives
                    events.append(parse_event_line(event_line(content, received_at), line_no=row_id,
                                                   interned=self.interned))
            with _no_gc():
                self.engine.add(events)
            self.after, self.gaps = after, gaps

    def report(self, as_of: datetime) -> SlaReport:
        key = (to_us(as_of), self.engine.count)
        if self.last is None or self.last[:2] != key:
            with _no_gc():
                self.last = (*key, self.engine.report(as_of=as_of))
        return self.last[2]


class _no_gc:  # noqa: N801
    """No cyclic collection inside one synchronous computation: it makes ~10^5 tuples (no cycles), and a full
    collection in the middle would traverse every event kept (seconds at 1M events)."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


_FEEDS: WeakKeyDictionary[Store, _Feed] = WeakKeyDictionary()


async def _feed(store: Store, config: SlaConfig) -> _Feed:
    feed = _FEEDS.get(store)
    if feed is None or feed.config is not config:
        feed = _FEEDS[store] = _Feed(config)
    await feed.refresh(store)
    return feed


async def live_report(
    *, store: Store, config: SlaConfig, as_of: datetime, rule: str | None = None,
    counterpart: str | None = None, region: str | None = None, since: datetime | None = None,
    until: datetime | None = None,
) -> SlaReport:
    """Compliance as of `as_of`; filters keep the legs asked for (period = the leg's start) and re-sum them.

    Events go through the events export's own line format, so `gateway sla report --events` on an
    export recomputes exactly this report. They are read and parsed once per process (_Feed); a report
    recomputes only the cases whose events changed or whose next event time as_of passed."""
    report = (await _feed(store, config)).report(as_of)
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
