"""Alerts as data: the conditions rules see, the alerts kept, and the pure steps between them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

SEVERITY = {"warning": 1, "critical": 2}
KEY_SEPARATOR = "\x1f"  # neither a rule name nor a subject holds it


@dataclass(frozen=True)
class Condition:
    """Something a rule found wrong now; the same (rule, subject) on the next pass is the same condition."""

    rule: str
    subject: str
    severity: str
    summary: str
    count: int = 1
    since: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return open_key(self.rule, self.subject)


def open_key(rule: str, subject: str) -> str:
    return f"{rule}{KEY_SEPARATOR}{subject}"


@dataclass
class Alert:
    id: int | None
    rule: str
    subject: str
    state: str  # firing | acknowledged | resolved
    severity: str
    summary: str
    count: int
    started_at: datetime
    fired_at: datetime
    changed_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    notified: str | None = None  # the last state the channels were told: None, firing, resolved

    @property
    def key(self) -> str:
        return open_key(self.rule, self.subject)

    @property
    def open(self) -> bool:
        return self.state != "resolved"

    def notice(self) -> str | None:
        """What the channels still have to hear about this alert, if anything."""
        if self.state == "firing" and self.notified is None:
            return "firing"
        if self.state == "resolved" and self.notified == "firing":
            return "resolved"  # said once: an alert never notified as firing resolves silently
        return None

    def pending_since(self) -> datetime:
        return self.resolved_at if self.notice() == "resolved" and self.resolved_at else self.fired_at

    @classmethod
    def raised(cls, condition: Condition, *, now: datetime) -> "Alert":
        return cls(None, condition.rule, condition.subject, "firing", condition.severity, condition.summary,
                   condition.count, condition.since or now, now, now, dict(condition.detail))


@dataclass
class Plan:
    """What one pass changes: alerts to raise, alerts updated in place, alerts resolved."""

    new: list[Alert] = field(default_factory=list)
    changed: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.resolved)


def reconcile(alerts: Iterable[Alert], conditions: Iterable[Condition], *, evaluated: Iterable[str],
              now: datetime) -> Plan:
    """Match this pass's conditions to the open alerts. A rule that could not be evaluated (its source failed)
    leaves its alerts as they are: not knowing is not the same as all clear."""
    evaluated = set(evaluated)
    open_by_key = {a.key: a for a in alerts if a.open}
    plan = Plan()
    seen: set[str] = set()
    for c in conditions:
        if c.rule not in evaluated or c.key in seen:
            continue
        seen.add(c.key)
        alert = open_by_key.get(c.key)
        if alert is None:
            plan.new.append(Alert.raised(c, now=now))
            continue
        worse = SEVERITY[c.severity] > SEVERITY[alert.severity]
        moved = worse or c.count != alert.count
        if not moved and (c.summary, c.detail) == (alert.summary, alert.detail):
            continue
        if worse:  # worse than what was acknowledged or sent (a certificate now expired): told again
            alert.state, alert.notified, alert.fired_at = "firing", None, now
            alert.acknowledged_at = alert.acknowledged_by = None
        alert.severity, alert.summary, alert.count, alert.detail = c.severity, c.summary, c.count, dict(c.detail)
        if moved:  # a storm still growing keeps its notification waiting (see due_groups)
            alert.changed_at = now
        plan.changed.append(alert)
    for key, alert in open_by_key.items():
        if key not in seen and alert.rule in evaluated:
            alert.state, alert.resolved_at, alert.changed_at = "resolved", now, now
            plan.resolved.append(alert)
    return plan


def due_groups(alerts: Iterable[Alert], *, now: datetime, wait_s: float, max_wait_s: float
               ) -> dict[str, list[Alert]]:
    """Per rule, the alerts to tell the channels about now: once the rule's changes have been quiet for `wait_s`,
    or `max_wait_s` after the first of them, whichever comes first; one notification per rule."""
    pending: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        if alert.notice() is not None:
            pending[alert.rule].append(alert)
    due = {}
    for rule, items in pending.items():
        first = min(a.pending_since() for a in items)
        last = max(a.changed_at for a in items)
        if (now - last).total_seconds() >= wait_s or (now - first).total_seconds() >= max_wait_s:
            due[rule] = sorted(items, key=lambda a: (a.notice() != "firing", a.id or 0))
    return due


def next_due_in(alerts: Iterable[Alert], *, now: datetime, wait_s: float, max_wait_s: float) -> float | None:
    """Seconds until the earliest group becomes due (None: nothing pending), so the monitor wakes for it."""
    pending: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        if alert.notice() is not None:
            pending[alert.rule].append(alert)
    best = None
    for items in pending.values():
        first = min(a.pending_since() for a in items)
        last = max(a.changed_at for a in items)
        at = min((last - now).total_seconds() + wait_s, (first - now).total_seconds() + max_wait_s)
        best = at if best is None else min(best, at)
    return None if best is None else max(0.0, best)
