"""The SLA computation: engine events in, legs + per-rule summary + KPIs out; pure (no I/O, no clock)."""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import orjson

from gateway.sla import render
from gateway.sla.calendar import WorkingCalendar, to_us
from gateway.sla.events import (
    ACCEPTED,
    CASE_REGISTERED,
    COMPLETED,
    ESCALATION,
    PLAN_APPROVED,
    REJECTED,
    REQUESTED,
    RISK_CLOSED,
    RISK_DETECTED,
    Event,
)
from gateway.sla.legs import STATUSES, Leg
from gateway.sla.policy import SlaPolicy

# Only these replies can stop a leg or count as help given; a rejection does neither (BRIEF 4).
_USEFUL_REPLIES = frozenset({ACCEPTED, COMPLETED})
_IGNORED = frozenset({REJECTED, ESCALATION})
_SCORED_DOMAINS = ("legal", "housing", "economic", "medical")
DAY_US = 86_400_000_000
# Records are built positionally through tuple.__new__: 3x cheaper than keywords, and it runs once per leg.
_new = tuple.__new__


class KindInfo(Protocol):
    counterpart: str
    domain: str


@dataclass(frozen=True, slots=True)
class SlaReport:
    as_of: int  # µs since the epoch, UTC
    legs: list[Leg]
    summary: dict[str, dict[str, Any]]
    kpi: dict[str, Any]

    @property
    def as_of_text(self) -> str:
        return render.rfc3339(self.as_of)

    def legs_where(self, statuses: Iterable[str], *, limit: int | None = None) -> list[dict[str, Any]]:
        """Legs with one of `statuses`, as the report's JSON writes them; only these are formatted (a year's
        report has half a million legs, a page shows a few hundred)."""
        wanted = frozenset(statuses)
        chosen = [leg for leg in self.legs if leg.status in wanted]
        return render.leg_dicts(chosen[:limit] if limit is not None else chosen)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (times as RFC 3339 UTC strings); for small reports and the API."""
        return orjson.loads(self.to_json())

    def to_json(self) -> bytes:
        return b"".join(self.iter_json())

    def iter_json(self) -> Iterator[bytes]:
        return render.iter_json(as_of=self.as_of, legs=self.legs, summary=self.summary, kpi=self.kpi)

    def iter_csv(self) -> Iterator[str]:
        return render.iter_csv(self.legs)


# --- the rules, compiled once per report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    index: int
    start_type: str
    domain: str | None
    levels: frozenset[str] | None
    stop_type: str
    kinds: frozenset[str] | None
    linked: bool
    duration_us: int | None
    working_days: int | None
    waits_on: str  # counterpart charged with a leg that was not stopped


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything a case's computation reads besides its events: the same for every case of a report."""

    rules: list[_Rule]
    starts: dict[str, list[_Rule]]  # message type -> the rules it may start: one look-up per event
    stops: dict[str, list[_Rule]]  # message type -> the rules it may stop
    order: dict[str, int]  # rule name -> its place in the report
    calendar: WorkingCalendar
    kinds: Mapping[str, KindInfo]


def _plan(*, policy: SlaPolicy, calendar: WorkingCalendar, kinds: Mapping[str, KindInfo]) -> _Plan:
    rules = []
    for index, (name, rule) in enumerate(policy.rules.items()):
        stop = rule.stop
        if not stop.type.startswith("referral."):
            waits_on = "probation"  # plan.approved and risk.closed come from the Probation IS
        else:
            candidates = {kinds[k].counterpart for k in (stop.kinds or kinds) if k in kinds}
            waits_on = candidates.pop() if len(candidates) == 1 else "unattributed"
        rules.append(_Rule(
            name=name, index=index, start_type=rule.start.type, domain=rule.start.domain,
            levels=frozenset(rule.start.levels) if rule.start.levels else None,
            stop_type=stop.type, kinds=frozenset(stop.kinds) if stop.kinds else None,
            linked=stop.linked_to_risk, duration_us=rule.limit.duration_us,
            working_days=rule.limit.working_days, waits_on=waits_on,
        ))
    starts: dict[str, list[_Rule]] = {}
    stops: dict[str, list[_Rule]] = {}
    for r in rules:
        starts.setdefault(r.start_type, []).append(r)
        stops.setdefault(r.stop_type, []).append(r)
    return _Plan(rules=rules, starts=starts, stops=stops, order={r.name: r.index for r in rules},
                 calendar=calendar, kinds=kinds)


# --- one case --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Kpi:
    r3_detected: int = 0
    r3_close_us: list[int] = field(default_factory=list)
    day90_cases: int = 0
    day90_three_at_2: int = 0
    day180_cases: int = 0
    day180_index_sum: int = 0
    day180_successful: int = 0
    day180_index_counts: Counter[int] = field(default_factory=Counter)  # index value -> cases (the distribution)


class _CaseFacts(NamedTuple):
    """What one case's events decide whatever the report's as_of (the events themselves already end at it)."""

    legs: list[Leg]  # in report order; a leg not stopped has status "" until as_of fills it in (_apply)
    unstopped: bool
    r3_detected: int
    r3_close_us: list[int]
    registered_at: int | None
    day90_three_at_2: bool
    day180_index: int
    day180_successful: bool


@dataclass(slots=True)
class _Stops:
    """A rule's candidate stops for one risk (or for the case, when the rule does not link them), by time."""

    times: list[int] = field(default_factory=list)  # kept apart from the events for bisect (no O(n²) scan)
    events: list[Event] = field(default_factory=list)


def _scores(events: list[Event], until: int, kinds: Mapping[str, KindInfo]) -> dict[str, int]:
    """Domain scores 0-2 of one case at `until` (BRIEF 4), from its events sorted by time."""
    open_risks: dict[str, str] = {}
    served: set[str] = set()
    high: set[str] = set()
    linked: set[str] = set()
    plan = False
    for at, _, t, _, risk_id, _, kind, domain, level, _ in events:
        if at > until:
            break
        if t == RISK_DETECTED:
            open_risks[risk_id] = domain
            if level == "R2" or level == "R3":
                high.add(risk_id)
        elif t == RISK_CLOSED:
            open_risks.pop(risk_id, None)
        elif t == ACCEPTED or t == COMPLETED:
            info = kinds.get(kind)  # type: ignore[arg-type]
            if info is not None:
                served.add(info.domain)
        elif t == PLAN_APPROVED:
            plan = True
        elif t == REQUESTED and risk_id is not None:
            linked.add(risk_id)
    open_domains = set(open_risks.values())
    scores = {d: 2 if d not in open_domains else 1 if d in served else 0 for d in _SCORED_DOMAINS}
    scores["institutional"] = (2 if high <= linked else 1) if plan else 0
    return scores


def _case(case_id: str, events: list[Event], plan: _Plan) -> _CaseFacts:
    # Business time decides, not arrival order; message_id breaks ties so the result never depends on order.
    events.sort()
    rules, calendar, kinds = plan.rules, plan.calendar, plan.kinds
    starts_of, stops_of = plan.starts, plan.stops
    starts: dict[int, list[Event]] = {}
    stops: dict[int, list[Event]] = {}
    region = "unknown"
    registered_at: int | None = None
    r3: dict[str, int] = {}
    closed: dict[str, list[int]] = {}
    for e in events:
        at, _, t, _, risk_id, _, kind, domain, level, reg = e  # one unpacking: this runs once per event
        for r in starts_of.get(t, ()):
            if (r.domain is None or domain == r.domain) and (r.levels is None or level in r.levels):
                starts.setdefault(r.index, []).append(e)
        for r in stops_of.get(t, ()):
            if r.kinds is None or kind in r.kinds:
                stops.setdefault(r.index, []).append(e)
        if t == CASE_REGISTERED:
            if registered_at is None:
                registered_at, region = at, reg or "unknown"
        elif t == RISK_DETECTED:
            if level == "R3" and risk_id not in r3:
                r3[risk_id] = at  # type: ignore[index]
        elif t == RISK_CLOSED:
            closed.setdefault(risk_id, []).append(at)  # type: ignore[arg-type]

    case_legs: list[Leg] = []
    unstopped = False
    for index, rule_starts in starts.items():
        r = rules[index]
        groups: dict[str | None, _Stops] = {}  # a linked rule is stopped only by a reply on the same risk
        for s in stops.get(index, ()):
            key = s.risk_id if r.linked else None
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Stops()
            group.times.append(s.at)
            group.events.append(s)
        for st in rule_starts:
            start_at = st.at
            if r.duration_us is not None:
                deadline = start_at + r.duration_us
            else:
                deadline = calendar.working_days_deadline_us(start_at, r.working_days)  # type: ignore[arg-type]
            group = groups.get(st.risk_id if r.linked else None)
            stop = None
            if group is not None:
                i = bisect_left(group.times, start_at)  # a stop dated before its start is not eligible
                if i < len(group.events):
                    stop = group.events[i]
            if stop is not None:
                stop_at = stop.at
                info = kinds.get(stop.kind) if stop.kind is not None else None
                case_legs.append(_new(Leg, (
                    case_id, r.name, st.message_id, start_at, deadline, stop.message_id, stop_at,
                    "met" if stop_at <= deadline else "breached", stop_at - start_at,
                    info.counterpart if info is not None else r.waits_on, region)))
            else:
                unstopped = True
                case_legs.append(_new(Leg, (
                    case_id, r.name, st.message_id, start_at, deadline, None, None, "", 0, r.waits_on, region)))
    if len(case_legs) > 1:
        order = plan.order
        case_legs.sort(key=lambda leg: (leg.start_at, order[leg.rule], leg.start_message_id))

    r3_close_us = []
    for risk_id, detected in r3.items():
        after = [c for c in closed.get(risk_id, ()) if c >= detected]
        if after:
            r3_close_us.append(after[0] - detected)
    three_at_2, index, successful = False, 0, False
    if registered_at is not None:
        # Both scores whatever as_of: _apply counts them once as_of is 90 (180) days past the registration.
        scores = _scores(events, registered_at + 90 * DAY_US, kinds)
        three_at_2 = scores["legal"] == scores["housing"] == scores["economic"] == 2
        scores = _scores(events, registered_at + 180 * DAY_US, kinds)
        index = sum(scores.values())
        successful = index >= 7 and min(scores.values()) > 0
    return _CaseFacts(case_legs, unstopped, len(r3), r3_close_us, registered_at, three_at_2, index, successful)


def _apply(facts: _CaseFacts, as_of: int, kpi: _Kpi, legs: list[Leg]) -> None:
    """One case's facts into the report as of `as_of`: legs not stopped are open or overdue by now."""
    # Runs once per case per report (~10^5 times): one unpacking instead of attribute look-ups.
    case_legs, unstopped, r3_detected, r3_close_us, registered_at, three_at_2, index, successful = facts
    if unstopped:
        for leg in case_legs:
            if leg.status:
                legs.append(leg)
            else:  # a new status and elapsed time, the rest kept: slices in C rather than _replace's keywords
                legs.append(_new(Leg, leg[:7] + ("overdue" if as_of > leg.deadline_at else "open",
                                                 as_of - leg.start_at) + leg[9:]))
    else:
        legs.extend(case_legs)
    if r3_detected:
        kpi.r3_detected += r3_detected
        kpi.r3_close_us.extend(r3_close_us)
    if registered_at is not None and registered_at + 90 * DAY_US <= as_of:
        kpi.day90_cases += 1
        kpi.day90_three_at_2 += three_at_2
        if registered_at + 180 * DAY_US <= as_of:
            kpi.day180_cases += 1
            kpi.day180_index_sum += index
            kpi.day180_index_counts[index] += 1
            kpi.day180_successful += successful


# --- the report ------------------------------------------------------------------------------------------


def _counts(keys: list[str] | None, tally: Counter[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Per key: met, breached, open, overdue and compliance = met / (met + breached + overdue), null if 0/0.

    `keys` fixes which keys appear and in what order (every rule, even without legs); None: the keys seen, sorted.
    """
    out: dict[str, dict[str, Any]] = {}
    for key in keys if keys is not None else sorted({k for k, _ in tally}):
        counts: dict[str, Any] = {status: tally.get((key, status), 0) for status in STATUSES}
        denominator = counts["met"] + counts["breached"] + counts["overdue"]
        counts["compliance"] = counts["met"] / denominator if denominator else None
        out[key] = counts
    return out


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# Leg fields the tallies group by, fetched in C: rule, counterpart, region, status.
_TALLY_KEY = itemgetter(Leg._fields.index("rule"), Leg._fields.index("counterpart"), Leg._fields.index("region"),
                        Leg._fields.index("status"))
_RULE_STATUS = itemgetter(Leg._fields.index("rule"), Leg._fields.index("status"))


def _report(*, as_of_us: int, legs: list[Leg], kpi: _Kpi, unmatched: int, rules: list[_Rule]) -> SlaReport:
    # Counted in C (Counter over itemgetter tuples): a Python loop over 500k legs costs three times as much.
    # One pass over the legs; the three tallies are then summed from its few hundred distinct keys.
    by_rule: Counter[tuple[str, str]] = Counter()
    by_counterpart: Counter[tuple[str, str]] = Counter()
    by_region: Counter[tuple[str, str]] = Counter()
    for (rule, counterpart, region, status), n in Counter(map(_TALLY_KEY, legs)).items():
        by_rule[rule, status] += n
        by_counterpart[counterpart, status] += n
        by_region[region, status] += n
    summary = _counts([r.name for r in rules], by_rule)
    kpi_out = {
        "compliance_by_rule": {name: s["compliance"] for name, s in summary.items()},
        "compliance_by_counterpart": _counts(None, by_counterpart),
        "compliance_by_region": _counts(None, by_region),
        "r3_risks": {
            "detected": kpi.r3_detected,
            "closed": len(kpi.r3_close_us),
            "median_time_to_close_seconds":
                statistics.median(kpi.r3_close_us) / 1_000_000 if kpi.r3_close_us else None,
        },
        "day90": {
            "cases": kpi.day90_cases,
            "legal_housing_economic_at_2": kpi.day90_three_at_2,
            "share": _ratio(kpi.day90_three_at_2, kpi.day90_cases),
        },
        "day180": {
            "cases": kpi.day180_cases,
            "mean_reintegration_index":
                kpi.day180_index_sum / kpi.day180_cases if kpi.day180_cases else None,
            "successful": kpi.day180_successful,
            "successful_share": _ratio(kpi.day180_successful, kpi.day180_cases),
            "index_distribution": {str(k): v for k, v in sorted(kpi.day180_index_counts.items())},
        },
        "unmatched_replies": unmatched,
    }
    return SlaReport(as_of=as_of_us, legs=legs, summary=summary, kpi=kpi_out)


def summarize(legs: Iterable[Leg], *, rules: list[str]) -> dict[str, dict[str, Any]]:
    """The per-rule summary of any subset of legs, counted as the report counts its own."""
    return _counts(rules, Counter(map(_RULE_STATUS, legs)))


def _as_of_us(as_of: datetime) -> int:
    if as_of.tzinfo is None:
        raise ValueError("as_of needs an explicit offset")
    return to_us(as_of)


def _as_reply_to(reply: Event, request: Event) -> Event:
    """A reply as its case sees it: the case, risk and kind of the request it answers."""
    return _new(Event, (reply.at, reply.message_id, reply.type, request.case_id, request.risk_id, reply.referral_id,
                        request.kind, None, None, None))


def compute_report(*, events: Iterable[Event], policy: SlaPolicy, calendar: WorkingCalendar,
                   kinds: Mapping[str, KindInfo], as_of: datetime) -> SlaReport:
    """Legs, per-rule summary and KPIs as of `as_of` (events dated after it have not happened yet).

    `kinds` maps a referral kind to its counterpart and domain (referral-kinds.yaml's `kinds`).
    """
    as_of_us = _as_of_us(as_of)
    seen: set[str] = set()
    by_case: dict[str, list[Event]] = {}
    replies: list[Event] = []
    requests: dict[str, Event] = {}
    for e in events:
        at, message_id, t, case_id, _, referral_id, _, _, _, _ = e  # one unpacking: this runs once per event
        if message_id in seen:  # the same message_id counts once
            continue
        seen.add(message_id)
        if at > as_of_us or t in _IGNORED:
            continue
        if t in _USEFUL_REPLIES:
            replies.append(e)  # its case, kind and risk come from its request, which may arrive later
            continue
        if t == REQUESTED:
            earlier = requests.get(referral_id)  # type: ignore[arg-type]
            if earlier is None or (at, message_id) < (earlier.at, earlier.message_id):
                requests[referral_id] = e  # type: ignore[index]
        case_events = by_case.get(case_id)
        if case_events is None:
            by_case[case_id] = [e]
        else:
            case_events.append(e)
    del seen
    unmatched = 0
    for e in replies:
        request = requests.get(e.referral_id)  # type: ignore[arg-type]
        if request is None:
            unmatched += 1  # no request known: no kind, no risk, so it can stop nothing
            continue
        by_case.setdefault(request.case_id, []).append(_as_reply_to(e, request))
    del replies, requests

    plan = _plan(policy=policy, calendar=calendar, kinds=kinds)
    legs: list[Leg] = []
    kpi = _Kpi()
    for case_id in sorted(by_case):
        _apply(_case(case_id, by_case[case_id], plan), as_of_us, kpi, legs)
    del by_case
    return _report(as_of_us=as_of_us, legs=legs, kpi=kpi, unmatched=unmatched, rules=plan.rules)


class _Stretch(NamedTuple):
    """A case's share of a report as of any moment in one stretch of as_of."""

    facts: _CaseFacts | None  # None: no event of the case dated by then
    late_replies: int  # replies dated by then whose request is dated after (unmatched)


class IncrementalReport:
    """`compute_report` over events that keep arriving: the same report, recomputing only the cases that changed.

    Events are added once (in acceptance order, as the events file lists them). Each case's facts are kept
    per stretch of as_of between two of the times that decide its events (its own, its replies', their
    requests'), so a report as of any moment recomputes a case only when its events changed or as_of moved
    past one of those times; the rest of the report is _apply and the summary."""

    _MEMO_PER_CASE = 4  # stretches of as_of kept per case: "now" and a few fixed dates are the usual asks

    def __init__(self, *, policy: SlaPolicy, calendar: WorkingCalendar, kinds: Mapping[str, KindInfo]) -> None:
        self._plan = _plan(policy=policy, calendar=calendar, kinds=kinds)
        self.count = 0
        self._seen: set[str] = set()
        self._own: dict[str, list[Event]] = {}  # case -> its events but replies (and those compute_report ignores)
        self._cases: list[str] = []
        self._sorted = True
        self._requests: dict[str, Event] = {}  # referral -> its earliest request: a reply's case, kind and risk
        self._replies: dict[str, list[Event]] = {}  # referral -> its useful replies
        self._referrals_of: dict[str, set[str]] = {}  # case -> referrals whose earliest request it holds
        self._orphans: set[str] = set()  # referrals with replies and no request at all
        self._times: dict[str, list[int]] = {}  # case -> sorted times deciding its events; absent: changed
        self._memo: dict[str, dict[int, _Stretch]] = {}  # case -> stretch number -> its share of the report

    def add(self, events: Iterable[Event]) -> None:
        for e in events:
            at, message_id, t, case_id, _, referral_id, _, _, _, _ = e
            if message_id in self._seen:  # the same message_id counts once
                continue
            self._seen.add(message_id)
            self.count += 1
            if t in _IGNORED:
                continue
            if t in _USEFUL_REPLIES:
                self._replies.setdefault(referral_id, []).append(e)  # type: ignore[arg-type]
                request = self._requests.get(referral_id)  # type: ignore[arg-type]
                if request is None:
                    self._orphans.add(referral_id)  # type: ignore[arg-type]
                else:
                    self._changed(request.case_id)
                continue
            if t == REQUESTED:
                earlier = self._requests.get(referral_id)  # type: ignore[arg-type]
                if earlier is None or (at, message_id) < (earlier.at, earlier.message_id):
                    # compute_report keeps the earliest request dated up to as_of: that is this one whenever
                    # it is dated up to as_of, and none otherwise, so the earliest overall decides
                    self._requests[referral_id] = e  # type: ignore[index]
                    self._orphans.discard(referral_id)  # type: ignore[arg-type]
                    if earlier is not None:
                        self._referrals_of[earlier.case_id].discard(referral_id)  # type: ignore[arg-type]
                        self._changed(earlier.case_id)
                    self._referrals_of.setdefault(case_id, set()).add(referral_id)  # type: ignore[arg-type]
            own = self._own.get(case_id)
            if own is None:
                self._own[case_id] = [e]
                self._cases.append(case_id)
                self._sorted = False
            else:
                own.append(e)
            self._changed(case_id)

    def _changed(self, case_id: str) -> None:
        self._times.pop(case_id, None)
        self._memo.pop(case_id, None)

    def _case_times(self, case_id: str) -> list[int]:
        times = [e.at for e in self._own[case_id]]
        for referral_id in self._referrals_of.get(case_id, ()):
            times += [r.at for r in self._replies.get(referral_id, ())]
        times.sort()
        return times

    def _stretch(self, case_id: str, as_of: int) -> _Stretch:
        events = [e for e in self._own[case_id] if e.at <= as_of]
        late = 0
        for referral_id in self._referrals_of.get(case_id, ()):
            request = self._requests[referral_id]
            for e in self._replies.get(referral_id, ()):
                if e.at > as_of:
                    continue
                if request.at > as_of:
                    late += 1
                else:
                    events.append(_as_reply_to(e, request))
        if not events:
            return _Stretch(None, late)
        return _Stretch(_case(case_id, events, self._plan), late)

    def report(self, *, as_of: datetime) -> SlaReport:
        """Equal to compute_report over every event added, as of `as_of`."""
        as_of_us = _as_of_us(as_of)
        if not self._sorted:
            self._cases.sort()
            self._sorted = True
        legs: list[Leg] = []
        kpi = _Kpi()
        unmatched = 0
        times_of, memo_of = self._times, self._memo
        for case_id in self._cases:
            times = times_of.get(case_id)
            if times is None:
                times = times_of[case_id] = self._case_times(case_id)
            stretch = bisect_right(times, as_of_us)  # the case's events as of as_of depend on this alone
            if stretch == 0:
                continue
            memo = memo_of.get(case_id)
            if memo is None:
                memo = memo_of[case_id] = {}
            entry = memo.get(stretch)
            if entry is None:
                if len(memo) >= self._MEMO_PER_CASE:
                    memo.clear()
                entry = memo[stretch] = self._stretch(case_id, as_of_us)
            unmatched += entry.late_replies
            if entry.facts is not None:
                _apply(entry.facts, as_of_us, kpi, legs)
        for referral_id in self._orphans:
            unmatched += sum(1 for e in self._replies[referral_id] if e.at <= as_of_us)
        return _report(as_of_us=as_of_us, legs=legs, kpi=kpi, unmatched=unmatched, rules=self._plan.rules)
