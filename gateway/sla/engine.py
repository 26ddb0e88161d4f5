"""The SLA computation: canonical events in, legs + per-rule summary + KPIs out; pure (no I/O, no clock)."""

from __future__ import annotations

import csv
import io
import statistics
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import orjson

from gateway.canonical.messages import AnyMessage
from gateway.sla.calendar import EPOCH, ONE_US, WorkingCalendar, to_us
from gateway.sla.policy import SlaPolicy

CASE_REGISTERED = "case.registered"
PLAN_APPROVED = "plan.approved"
RISK_DETECTED = "risk.detected"
RISK_CLOSED = "risk.closed"
REQUESTED = "referral.requested"
ACCEPTED = "referral.accepted"
COMPLETED = "referral.completed"
REJECTED = "referral.rejected"
ESCALATION = "escalation.raised"
# One shared str per type: comparisons and dict look-ups on 1M events stay cheap, and memory is shared.
TYPES: dict[str, str] = {t: t for t in (CASE_REGISTERED, PLAN_APPROVED, RISK_DETECTED, RISK_CLOSED, REQUESTED,
                                        ACCEPTED, COMPLETED, REJECTED, ESCALATION)}
# Only these replies can stop a leg or count as help given; a rejection does neither (BRIEF 4).
_USEFUL_REPLIES = frozenset({ACCEPTED, COMPLETED})
_IGNORED = frozenset({REJECTED, ESCALATION})
_SCORED_DOMAINS = ("legal", "housing", "economic", "medical")
STATUSES = ("met", "breached", "open", "overdue")
LEG_FIELDS = ("case_id", "rule", "start_message_id", "start_at", "deadline_at", "stop_message_id", "stop_at",
              "status", "elapsed_seconds")
DAY_US = 86_400_000_000


class Event(NamedTuple):
    """A canonical message reduced to what the SLA engine reads (a tuple: 1M of them must fit in memory)."""

    at: int  # occurred_at, microseconds since the epoch, UTC
    message_id: str
    type: str
    case_id: str
    risk_id: str | None = None  # risk.*; referral.requested; a reply gets its request's
    referral_id: str | None = None  # referral.*
    kind: str | None = None  # referral.requested; a reply gets its request's
    domain: str | None = None  # risk.detected
    level: str | None = None  # risk.detected
    region: str | None = None  # case.registered


class Leg(NamedTuple):
    case_id: str
    rule: str
    start_message_id: str
    start_at: int  # µs since the epoch, UTC
    deadline_at: int
    stop_message_id: str | None
    stop_at: int | None
    status: str
    elapsed_us: int  # stop − start; for a leg not stopped, as_of − start (time waited so far)
    counterpart: str  # who the leg waits on (KPI per counterpart); not in the report's legs
    region: str  # the case's region (KPI per region); not in the report's legs


class KindInfo(Protocol):
    counterpart: str
    domain: str


class EventLineError(ValueError):
    """A line of an events file is not a canonical message with `received_at`."""


# --- events in ---------------------------------------------------------------------------------------------


def event_from_message(message: AnyMessage) -> Event:
    """A parsed canonical message (gateway.canonical.messages) as an engine event."""
    body = message.body
    return Event(
        at=to_us(message.occurred_at),
        message_id=str(message.message_id),
        type=TYPES[message.type],
        case_id=message.case_id,
        risk_id=getattr(body, "risk_id", None),
        referral_id=getattr(body, "referral_id", None),
        kind=getattr(body, "kind", None) if message.type == REQUESTED else None,
        domain=getattr(body, "domain", None) if message.type == RISK_DETECTED else None,
        level=getattr(body, "level", None),
        region=getattr(body, "region", None),
    )


# Body fields the engine reads, per type: a line without them is refused rather than silently misread.
_BODY_FIELDS: dict[str, tuple[str, ...]] = {
    CASE_REGISTERED: ("region",),
    PLAN_APPROVED: (),
    RISK_DETECTED: ("risk_id", "domain", "level"),
    RISK_CLOSED: ("risk_id",),
    REQUESTED: ("referral_id", "kind"),
    ACCEPTED: ("referral_id",),
    COMPLETED: ("referral_id",),
    REJECTED: ("referral_id",),
    ESCALATION: (),
}


def _aware(value: object, name: str, line_no: int) -> datetime:
    if not isinstance(value, str):
        raise EventLineError(f"line {line_no}: {name}: missing or not a string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise EventLineError(f"line {line_no}: {name}: not an RFC 3339 date-time: {value[:40]!r}") from None
    if dt.tzinfo is None:
        raise EventLineError(f"line {line_no}: {name}: needs an explicit offset (e.g. +05:00 or Z)")
    return dt


_new = tuple.__new__
_fromisoformat = datetime.fromisoformat  # building the NamedTuple positionally through tuple.__new__ is 3x faster than Event(...)


def parse_event_line(line: bytes | str, *, line_no: int, interned: dict[str, str] | None = None) -> Event:
    """One line of an events file (`gateway audit export --format events`) as an engine event.

    Checks the structure the engine relies on (not the whole canonical schema: that would cost ~10x at
    1M lines). `interned` shares one str per case_id across events.
    """
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EventLineError(f"line {line_no}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventLineError(f"line {line_no}: not a JSON object")
    message_id = doc.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise EventLineError(f"line {line_no}: message_id: missing or not a string")
    raw_type = doc.get("type")
    type_ = TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if type_ is None:
        raise EventLineError(f"line {line_no}: type: unknown message type {raw_type!r}")
    case_id = doc.get("case_id")
    if not isinstance(case_id, str) or not case_id:
        raise EventLineError(f"line {line_no}: case_id: missing or not a string")
    occurred_at = doc.get("occurred_at")
    try:
        occurred = _fromisoformat(occurred_at)
        _fromisoformat(doc.get("received_at"))
    except (TypeError, ValueError):
        occurred = _aware(occurred_at, "occurred_at", line_no)  # the slow path names what is wrong
        _aware(doc.get("received_at"), "received_at", line_no)
    if occurred.tzinfo is None:
        _aware(occurred_at, "occurred_at", line_no)
    at = (occurred - EPOCH) // ONE_US  # to_us(), inlined: this runs once per line
    body = doc.get("body")
    if not isinstance(body, dict):
        raise EventLineError(f"line {line_no}: body: missing or not an object")
    for name in _BODY_FIELDS[type_]:
        if not isinstance(body.get(name), str):
            raise EventLineError(f"line {line_no}: body.{name}: missing or not a string (needed by {type_})")
    if interned is not None:
        case_id = interned.setdefault(case_id, case_id)
    risk_id = body.get("risk_id")
    if risk_id is not None and not isinstance(risk_id, str):
        raise EventLineError(f"line {line_no}: body.risk_id: not a string")
    if type_ is RISK_DETECTED:
        return _new(Event, (at, message_id, type_, case_id, risk_id, None, None, body["domain"], body["level"], None))
    if type_ is CASE_REGISTERED:
        return _new(Event, (at, message_id, type_, case_id, None, None, None, None, None, body["region"]))
    return _new(Event, (at, message_id, type_, case_id, risk_id, body.get("referral_id"),
                        body["kind"] if type_ is REQUESTED else None, None, None, None))


def parse_event_lines(lines: Iterable[bytes | str], *, first_line: int = 1) -> Iterator[Event]:
    """Every non-blank line as an event; the first bad line raises EventLineError naming its number."""
    interned: dict[str, str] = {}
    for line_no, line in enumerate(lines, start=first_line):
        if line.strip():
            yield parse_event_line(line, line_no=line_no, interned=interned)


# --- the computation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
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


def _compile(policy: SlaPolicy, kinds: Mapping[str, KindInfo]) -> list[_Rule]:
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
    return rules


@dataclass
class _Kpi:
    r3_detected: int = 0
    r3_close_us: list[int] = field(default_factory=list)
    day90_cases: int = 0
    day90_three_at_2: int = 0
    day180_cases: int = 0
    day180_index_sum: int = 0
    day180_successful: int = 0
    day180_index_counts: Counter[int] = field(default_factory=Counter)  # index value -> cases (the distribution)


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


def _case(case_id: str, events: list[Event], rules: list[_Rule], dispatch: dict[str, list[tuple[bool, _Rule]]],
          calendar: WorkingCalendar, kinds: Mapping[str, KindInfo], order: dict[str, int]) -> _CaseFacts:
    # Business time decides, not arrival order; message_id breaks ties so the result never depends on order.
    events.sort()
    starts: dict[int, list[Event]] = {}
    stops: dict[int, list[Event]] = {}
    region = "unknown"
    registered_at: int | None = None
    r3: dict[str, int] = {}
    closed: dict[str, list[int]] = {}
    for e in events:
        at, _, t, _, risk_id, _, kind, domain, level, reg = e
        for is_start, r in dispatch.get(t, ()):
            if is_start:
                if (r.domain is None or domain == r.domain) and (r.levels is None or level in r.levels):
                    starts.setdefault(r.index, []).append(e)
            elif r.kinds is None or kind in r.kinds:
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
        # Candidate stops per risk when the rule links them; times kept apart for bisect (no O(n²) scan).
        groups: dict[str | None, tuple[list[int], list[Event]]] = {}
        for s in stops.get(index, ()):
            key = s[4] if r.linked else None
            group = groups.get(key)
            if group is None:
                group = groups[key] = ([], [])
            group[0].append(s[0])
            group[1].append(s)
        for st in rule_starts:
            start_at = st[0]
            if r.duration_us is not None:
                deadline = start_at + r.duration_us
            else:
                deadline = calendar.working_days_deadline_us(start_at, r.working_days)  # type: ignore[arg-type]
            group = groups.get(st[4] if r.linked else None)
            stop = None
            if group is not None:
                i = bisect_left(group[0], start_at)  # a stop dated before its start is not eligible
                if i < len(group[1]):
                    stop = group[1][i]
            if stop is not None:
                stop_at = stop[0]
                info = kinds.get(stop[6]) if stop[6] is not None else None  # type: ignore[arg-type]
                case_legs.append(_new(Leg, (
                    case_id, r.name, st[1], start_at, deadline, stop[1], stop_at,
                    "met" if stop_at <= deadline else "breached", stop_at - start_at,
                    info.counterpart if info is not None else r.waits_on, region)))
            else:
                unstopped = True
                case_legs.append(_new(Leg, (
                    case_id, r.name, st[1], start_at, deadline, None, None, "", 0, r.waits_on, region)))
    if len(case_legs) > 1:
        case_legs.sort(key=lambda leg: (leg[3], order[leg[1]], leg[2]))

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
    # Runs once per case per report (~10^5 times): one unpacking instead of attribute look-ups, slices in C.
    case_legs, unstopped, r3_detected, r3_close_us, registered_at, three_at_2, index, successful = facts
    if unstopped:
        for leg in case_legs:
            if leg[7]:
                legs.append(leg)
            else:
                legs.append(_new(Leg, leg[:7] + ("overdue" if as_of > leg[4] else "open", as_of - leg[3]) + leg[9:]))
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


@dataclass(frozen=True)
class SlaReport:
    as_of: int  # µs since the epoch, UTC
    legs: list[Leg]
    summary: dict[str, dict[str, Any]]
    kpi: dict[str, Any]

    @property
    def as_of_text(self) -> str:
        return _rfc3339(self.as_of)

    def legs_where(self, statuses: Iterable[str], *, limit: int | None = None) -> list[dict[str, Any]]:
        """Legs with one of `statuses`, as the report's JSON writes them; only these are formatted (a year's
        report has half a million legs, a page shows a few hundred)."""
        wanted = frozenset(statuses)
        chosen = [leg for leg in self.legs if leg[7] in wanted]
        return [dict(zip(LEG_FIELDS, row)) for row in _leg_rows(chosen[:limit] if limit is not None else chosen)]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (times as RFC 3339 UTC strings); for small reports and the API."""
        return orjson.loads(self.to_json())

    def to_json(self) -> bytes:
        return b"".join(self.iter_json())

    def iter_json(self) -> Iterator[bytes]:
        """The report JSON (BRIEF 5) in pieces, so 1M-event reports are never held twice in memory."""
        yield self.json_head()
        yield from self.iter_legs_json(0, len(self.legs))
        yield self.json_tail()

    def json_head(self) -> bytes:
        return b'{"as_of":' + orjson.dumps(_rfc3339(self.as_of)) + b',"legs":['

    def iter_legs_json(self, start: int, stop: int, *, chunk: int = 20_000) -> Iterator[bytes]:
        """Legs [start, stop) as JSON objects joined by commas (no brackets): ranges can be rendered apart."""
        for i in range(start, stop, chunk):
            piece = orjson.dumps([dict(zip(LEG_FIELDS, row)) for row in _leg_rows(self.legs[i:min(i + chunk, stop)])])
            yield (b"," if i > start else b"") + piece[1:-1]

    def json_tail(self) -> bytes:
        return b'],"summary":' + orjson.dumps(self.summary) + b',"kpi":' + orjson.dumps(self.kpi) + b"}\n"

    def iter_csv(self) -> Iterator[str]:
        """The legs as CSV with a header row (the columns of the report's legs)."""
        yield self.csv_head()
        yield from self.iter_legs_csv(0, len(self.legs))

    def csv_head(self) -> str:
        return ",".join(LEG_FIELDS) + "\n"

    def iter_legs_csv(self, start: int, stop: int, *, chunk: int = 20_000) -> Iterator[str]:
        """CSV rows of legs [start, stop): ranges can be rendered apart."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for i in range(start, stop, chunk):
            writer.writerows(_leg_rows(self.legs[i:min(i + chunk, stop)]))  # csv writes None as an empty field
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()


_DAYS: dict[int, str] = {}  # memo: day number -> "YYYY-MM-DD"; a report spans a few thousand days at most
_EPOCH_DATE = date(1970, 1, 1)


def _rfc3339(us: int) -> str:
    """RFC 3339 UTC with "Z"; hand-made because isoformat() costs 3x as much and a report formats ~1.5M times."""
    seconds, micro = divmod(us, 1_000_000)
    days, rest = divmod(seconds, 86_400)
    day = _DAYS.get(days)
    if day is None:
        day = _DAYS[days] = (_EPOCH_DATE + timedelta(days=days)).isoformat()
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if not micro:
        return f"{day}T{hours:02}:{minutes:02}:{secs:02}Z"
    if not micro % 1000:  # an ipr deadline ends at .999
        return f"{day}T{hours:02}:{minutes:02}:{secs:02}.{micro // 1000:03}Z"
    return f"{day}T{hours:02}:{minutes:02}:{secs:02}.{micro:06}Z"


def _leg_row(leg: Leg, start_text: str) -> tuple[Any, ...]:
    case_id, rule, start_id, _, deadline, stop_id, stop_at, status, elapsed, _, _ = leg
    return (case_id, rule, start_id, start_text, _rfc3339(deadline), stop_id,
            None if stop_at is None else _rfc3339(stop_at), status, elapsed / 1_000_000)


def _leg_rows(legs: list[Leg]) -> Iterator[tuple[Any, ...]]:
    # A case's legs from one start share its start_at (4 rules start at case.registered): format it once.
    last_at, last_text = None, ""
    for leg in legs:
        if leg[3] != last_at:
            last_at, last_text = leg[3], _rfc3339(leg[3])
        yield _leg_row(leg, last_text)


def compute_report(*, events: Iterable[Event], policy: SlaPolicy, calendar: WorkingCalendar,
                   kinds: Mapping[str, KindInfo], as_of: datetime) -> SlaReport:
    """Legs, per-rule summary and KPIs as of `as_of` (events dated after it have not happened yet).

    `kinds` maps a referral kind to its counterpart and domain (referral-kinds.yaml's `kinds`).
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of needs an explicit offset")
    as_of_us = to_us(as_of)
    seen: set[str] = set()
    by_case: dict[str, list[Event]] = {}
    replies: list[Event] = []
    requests: dict[str, Event] = {}
    for e in events:
        at, message_id, t, case_id, _, referral_id, _, _, _, _ = e
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
            if earlier is None or (at, message_id) < (earlier[0], earlier[1]):
                requests[referral_id] = e  # type: ignore[index]
        case_events = by_case.get(case_id)
        if case_events is None:
            by_case[case_id] = [e]
        else:
            case_events.append(e)
    del seen
    unmatched = 0
    for e in replies:
        request = requests.get(e[5])  # type: ignore[arg-type]
        if request is None:
            unmatched += 1  # no request known: no kind, no risk, so it can stop nothing
            continue
        by_case.setdefault(request[3], []).append(
            _new(Event, (e[0], e[1], e[2], request[3], request[4], e[5], request[6], None, None, None)))
    del replies, requests

    rules, dispatch, order = _plan(policy, kinds)
    legs: list[Leg] = []
    kpi = _Kpi()
    for case_id in sorted(by_case):
        _apply(_case(case_id, by_case[case_id], rules, dispatch, calendar, kinds, order), as_of_us, kpi, legs)
    del by_case
    return _report(as_of_us, legs, kpi, unmatched, rules)


def _plan(policy: SlaPolicy, kinds: Mapping[str, KindInfo]
          ) -> tuple[list[_Rule], dict[str, list[tuple[bool, _Rule]]], dict[str, int]]:
    rules = _compile(policy, kinds)
    # Per message type, the rules it may start (True) or stop (False): one look-up per event.
    dispatch: dict[str, list[tuple[bool, _Rule]]] = defaultdict(list)
    for r in rules:
        dispatch[r.start_type].append((True, r))
        dispatch[r.stop_type].append((False, r))
    return rules, dispatch, {r.name: r.index for r in rules}


def _report(as_of_us: int, legs: list[Leg], kpi: _Kpi, unmatched: int, rules: list[_Rule]) -> SlaReport:
    # Counted in C (Counter over itemgetter tuples): a Python loop over 500k legs costs three times as much.
    # One pass over the legs; the three tallies are then summed from its few hundred distinct keys.
    by_rule: Counter[tuple[str, str]] = Counter()
    by_counterpart: Counter[tuple[str, str]] = Counter()
    by_region: Counter[tuple[str, str]] = Counter()
    for (rule, counterpart, region, status), n in Counter(map(itemgetter(1, 9, 10, 7), legs)).items():
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
    return _counts(rules, Counter(map(itemgetter(1, 7), legs)))


class IncrementalReport:
    """`compute_report` over events that keep arriving: the same report, recomputing only the cases that changed.

    Events are added once (in acceptance order, as the events file lists them). Each case's facts are kept
    per stretch of as_of between two of the times that decide its events (its own, its replies', their
    requests'), so a report as of any moment recomputes a case only when its events changed or as_of moved
    past one of those times; the rest of the report is _apply and the summary."""

    _MEMO_PER_CASE = 4  # stretches of as_of kept per case: "now" and a few fixed dates are the usual asks

    def __init__(self, *, policy: SlaPolicy, calendar: WorkingCalendar, kinds: Mapping[str, KindInfo]) -> None:
        self.calendar = calendar
        self.kinds = kinds
        self.rules, self.dispatch, self.order = _plan(policy, kinds)
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
        self._memo: dict[str, dict[int, tuple[_CaseFacts | None, int]]] = {}

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
                    self._changed(request[3])
                continue
            if t == REQUESTED:
                earlier = self._requests.get(referral_id)  # type: ignore[arg-type]
                if earlier is None or (at, message_id) < (earlier[0], earlier[1]):
                    # compute_report keeps the earliest request dated up to as_of: that is this one whenever
                    # it is dated up to as_of, and none otherwise, so the earliest overall decides
                    self._requests[referral_id] = e  # type: ignore[index]
                    self._orphans.discard(referral_id)  # type: ignore[arg-type]
                    if earlier is not None:
                        self._referrals_of[earlier[3]].discard(referral_id)  # type: ignore[arg-type]
                        self._changed(earlier[3])
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
        times = [e[0] for e in self._own[case_id]]
        for referral_id in self._referrals_of.get(case_id, ()):
            times += [r[0] for r in self._replies.get(referral_id, ())]
        times.sort()
        return times

    def _facts(self, case_id: str, as_of: int) -> tuple[_CaseFacts | None, int]:
        """The case's facts as of `as_of`, and its replies dated by then whose request is dated after (unmatched)."""
        events = [e for e in self._own[case_id] if e[0] <= as_of]
        late = 0
        for referral_id in self._referrals_of.get(case_id, ()):
            request = self._requests[referral_id]
            for e in self._replies.get(referral_id, ()):
                if e[0] > as_of:
                    continue
                if request[0] > as_of:
                    late += 1
                else:
                    events.append(_new(Event, (e[0], e[1], e[2], request[3], request[4], e[5], request[6],
                                               None, None, None)))
        if not events:
            return None, late
        return _case(case_id, events, self.rules, self.dispatch, self.calendar, self.kinds, self.order), late

    def report(self, *, as_of: datetime) -> SlaReport:
        """Equal to compute_report over every event added, as of `as_of`."""
        if as_of.tzinfo is None:
            raise ValueError("as_of needs an explicit offset")
        as_of_us = to_us(as_of)
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
                entry = memo[stretch] = self._facts(case_id, as_of_us)
            facts, late = entry
            unmatched += late
            if facts is not None:
                _apply(facts, as_of_us, kpi, legs)
        for referral_id in self._orphans:
            unmatched += sum(1 for e in self._replies[referral_id] if e[0] <= as_of_us)
        return _report(as_of_us, legs, kpi, unmatched, self.rules)
