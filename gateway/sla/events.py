"""The SLA event-line codec: an events-file line (or a canonical message) as the engine's Event record."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import NamedTuple

import orjson

from gateway.canonical.messages import AnyMessage
from gateway.sla.calendar import EPOCH, ONE_US, to_us

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


# Building the NamedTuple positionally through tuple.__new__ is 3x faster than Event(...): once per line.
_new = tuple.__new__


class EventLineError(ValueError):
    """A line of an events file is not a canonical message with `received_at`."""

    def __init__(self, line_no: int, reason: str) -> None:
        super().__init__(line_no, reason)  # both in args: the error survives pickling from a parsing process
        self.line_no = line_no
        self.reason = reason

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason}"


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
        raise EventLineError(line_no, f"{name}: missing or not a string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise EventLineError(line_no, f"{name}: not an RFC 3339 date-time: {value[:40]!r}") from None
    if dt.tzinfo is None:
        raise EventLineError(line_no, f"{name}: needs an explicit offset (e.g. +05:00 or Z)")
    return dt


_fromisoformat = datetime.fromisoformat  # a global look-up fewer per line


def parse_event_line(line: bytes | str, *, line_no: int, interned: dict[str, str] | None = None) -> Event:
    """One line of an events file (`gateway audit export --format events`) as an engine event.

    Checks the structure the engine relies on (not the whole canonical schema: that would cost ~10x at
    1M lines). `interned` shares one str per case_id across events.
    """
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EventLineError(line_no, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventLineError(line_no, "not a JSON object")
    message_id = doc.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise EventLineError(line_no, "message_id: missing or not a string")
    raw_type = doc.get("type")
    type_ = TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if type_ is None:
        raise EventLineError(line_no, f"type: unknown message type {raw_type!r}")
    case_id = doc.get("case_id")
    if not isinstance(case_id, str) or not case_id:
        raise EventLineError(line_no, "case_id: missing or not a string")
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
        raise EventLineError(line_no, "body: missing or not an object")
    for name in _BODY_FIELDS[type_]:
        if not isinstance(body.get(name), str):
            raise EventLineError(line_no, f"body.{name}: missing or not a string (needed by {type_})")
    if interned is not None:
        case_id = interned.setdefault(case_id, case_id)
    risk_id = body.get("risk_id")
    if risk_id is not None and not isinstance(risk_id, str):
        raise EventLineError(line_no, "body.risk_id: not a string")
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
