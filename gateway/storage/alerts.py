"""The alert tables: alerts, grouped notifications, the e-mail outbox, the monitor's lease; and the reads the
alert rules take from the pipeline's tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

import orjson
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection

from gateway.alerts.model import Alert, Plan
from gateway.storage.db import Engines
from gateway.storage.store import dialect_insert
from gateway.storage.tables import alert_emails, alert_monitor, alert_notifications, alerts, deliveries, messages

WAITING = ("pending", "in_flight")
_A = alerts.c


def _alert(row: Any) -> Alert:
    m = row._mapping
    return Alert(m["id"], m["rule"], m["subject"], m["state"], m["severity"], m["summary"], m["count"],
                 m["started_at"], m["fired_at"], m["changed_at"], orjson.loads(m["detail"]) if m["detail"] else {},
                 m["acknowledged_at"], m["acknowledged_by"], m["resolved_at"], m["notified"])


def _values(a: Alert) -> dict[str, Any]:
    return {"rule": a.rule, "subject": a.subject, "open_key": a.key if a.open else None, "state": a.state,
            "severity": a.severity, "summary": a.summary[:4000], "detail": orjson.dumps(a.detail).decode(),
            "count": a.count, "started_at": a.started_at, "fired_at": a.fired_at, "changed_at": a.changed_at,
            "acknowledged_at": a.acknowledged_at, "acknowledged_by": a.acknowledged_by,
            "resolved_at": a.resolved_at, "notified": a.notified}


# --- reads ------------------------------------------------------------------------------------------


async def open_alerts(engines: Engines) -> list[Alert]:
    """Alerts not resolved, and resolved ones whose resolution the channels have not heard yet."""
    query = select(alerts).where(or_(_A.state != "resolved", _A.notified == "firing")).order_by(_A.id)
    async with engines.read.connect() as conn:
        return [_alert(r) for r in (await conn.execute(query)).all()]


async def recent_alerts(engines: Engines, *, resolved_limit: int = 50) -> list[Alert]:
    """For the alerts page: every open alert, then the latest resolved ones."""
    async with engines.read.connect() as conn:
        live = (await conn.execute(select(alerts).where(_A.state != "resolved").order_by(_A.id.desc()))).all()
        done = (await conn.execute(select(alerts).where(_A.state == "resolved").order_by(_A.id.desc())
                                   .limit(resolved_limit))).all()
    return [_alert(r) for r in (*live, *done)]


async def get_alert(engines: Engines, alert_id: int) -> Alert | None:
    async with engines.read.connect() as conn:
        row = (await conn.execute(select(alerts).where(_A.id == alert_id))).first()
    return None if row is None else _alert(row)


async def state_counts(engines: Engines) -> dict[tuple[str, str], int]:
    """(rule, state) -> open alerts, for the gauge."""
    query = select(_A.rule, _A.state, func.count()).where(_A.state != "resolved").group_by(_A.rule, _A.state)
    async with engines.read.connect() as conn:
        return {(r[0], r[1]): r[2] for r in (await conn.execute(query)).all()}


async def recent_notifications(engines: Engines, *, limit: int = 30) -> list[dict[str, Any]]:
    """The latest notifications, each with how every channel fared: its e-mails, and its webhook deliveries
    (state, attempts, the last reason, the next try) read from the outbox."""
    n = alert_notifications.c
    async with engines.read.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(
            select(alert_notifications).order_by(n.id.desc()).limit(limit))).mappings()]
        ids = [r["id"] for r in rows]
        mids = [r["message_id"] for r in rows]
        mails = (await conn.execute(select(alert_emails).where(alert_emails.c.notification_id.in_(ids))
                                    .order_by(alert_emails.c.id))).mappings().all() if ids else []
        hooks = (await conn.execute(
            select(deliveries.c.id, deliveries.c.message_id, deliveries.c.instance, deliveries.c.state,
                   deliveries.c.attempts, deliveries.c.next_attempt_at, deliveries.c.reason,
                   deliveries.c.last_status, deliveries.c.finished_at)
            .where(deliveries.c.message_id.in_(mids)).order_by(deliveries.c.id))).mappings().all() if mids else []
    for r in rows:
        r["alerts"] = orjson.loads(r["alerts"])
        r["channels"] = (
            [{"type": "webhook", "channel": h["instance"], "state": h["state"], "attempts": h["attempts"],
              "next_attempt_at": h["next_attempt_at"] if h["state"] in WAITING else None,
              "error": h["reason"], "done_at": h["finished_at"], "delivery_id": h["id"]}
             for h in hooks if h["message_id"] == r["message_id"]]
            + [{"type": "email", "channel": m["channel"], "state": m["state"], "attempts": m["attempts"],
                "next_attempt_at": m["next_attempt_at"] if m["state"] == "pending" else None,
                "error": m["last_error"], "done_at": m["sent_at"], "delivery_id": None}
               for m in mails if m["notification_id"] == r["id"]])
    return rows


async def dead_letter_counts(engines: Engines, *, since: datetime, per_instance: dict[str, datetime]
                             ) -> dict[str, tuple[int, datetime, datetime]]:
    """instance -> (dead letters, first, last): those since `since`, and for each instance in `per_instance`
    (an alert already open) those since its own start. Alert webhooks are left out: their failures are shown
    on their notifications, and an alert about an alert channel could only go to that channel."""
    d = deliveries.c
    base = and_(d.state == "dead", d.counterpart != "webhook", d.instance.is_not(None))
    found: dict[str, tuple[int, datetime, datetime]] = {}
    async with engines.read.connect() as conn:
        rows = (await conn.execute(select(d.instance, func.count(), func.min(d.finished_at), func.max(d.finished_at))
                                   .where(base, d.finished_at >= since).group_by(d.instance))).all()
        found.update({r[0]: (r[1], r[2], r[3]) for r in rows if r[0] not in per_instance})
        for instance, start in per_instance.items():
            r = (await conn.execute(select(func.count(), func.min(d.finished_at), func.max(d.finished_at))
                                    .where(base, d.instance == instance, d.finished_at >= start))).first()
            if r is not None and r[0]:
                found[instance] = (r[0], r[1], r[2])
    return found


async def backlog(engines: Engines) -> dict[str, tuple[int, datetime]]:
    """instance -> (deliveries waiting, the oldest one's creation), counterparts only."""
    d = deliveries.c
    query = (select(d.instance, func.count(), func.min(d.created_at))
             .where(d.state.in_(WAITING), d.counterpart != "webhook", d.instance.is_not(None))
             .group_by(d.instance))
    async with engines.read.connect() as conn:
        return {r[0]: (r[1], r[2]) for r in (await conn.execute(query)).all()}


# --- writes, inside a transaction handed in by the caller --------------------------------------------


def take_lease(conn: Connection, *, name: str, holder: str, now: datetime, lease: timedelta) -> bool:
    """Hold (or renew) the monitor's lease; False while another process holds a live one."""
    m = alert_monitor.c
    taken = conn.execute(update(alert_monitor).where(m.name == name, or_(m.holder == holder, m.lease_until < now))
                         .values(holder=holder, lease_until=now + lease)).rowcount
    if taken:
        return True
    inserted = conn.execute(dialect_insert(conn, alert_monitor).on_conflict_do_nothing(index_elements=["name"])
                            .values(name=name, holder=holder, lease_until=now + lease)).rowcount
    return bool(inserted)


def release_lease(conn: Connection, *, name: str, holder: str, now: datetime) -> None:
    m = alert_monitor.c
    conn.execute(update(alert_monitor).where(m.name == name, m.holder == holder).values(lease_until=now))


def apply_plan(conn: Connection, plan: Plan) -> None:
    """New alerts (one per open key, whoever inserts first), and the changed and resolved ones."""
    for alert in plan.new:
        alert.id = conn.execute(dialect_insert(conn, alerts).values(**_values(alert))
                                .on_conflict_do_nothing(index_elements=["open_key"])
                                .returning(_A.id)).scalar()
    for alert in plan.changed + plan.resolved:
        if alert.id is not None:
            conn.execute(update(alerts).where(_A.id == alert.id).values(**_values(alert)))


def mark_notified(conn: Connection, items: Iterable[Alert]) -> None:
    for alert in items:
        notice = alert.notice()
        if alert.id is not None and notice is not None:
            conn.execute(update(alerts).where(_A.id == alert.id).values(notified=notice))
            alert.notified = notice


def insert_notification(conn: Connection, *, rule: str, now: datetime, message_id: str, items: list[Alert],
                        email_channels: Iterable[str]) -> int:
    """The notification and an e-mail row per e-mail channel, due at once."""
    summary = [{"alert_id": a.id, "state": "resolved" if a.notice() == "resolved" else a.state} for a in items]
    nid = conn.execute(alert_notifications.insert().values(
        rule=rule, created_at=now, message_id=message_id, count=sum(a.count for a in items),
        alerts=orjson.dumps(summary).decode()).returning(alert_notifications.c.id)).scalar_one()
    rows = [{"notification_id": nid, "channel": name, "state": "pending", "attempts": 0, "next_attempt_at": now}
            for name in email_channels]
    if rows:
        conn.execute(alert_emails.insert(), rows)
    return nid


def acknowledge(conn: Connection, *, alert_id: int, by: str, now: datetime) -> Alert | None:
    """Firing -> acknowledged; None when the alert is not firing (already acknowledged, resolved, unknown)."""
    done = conn.execute(update(alerts).where(_A.id == alert_id, _A.state == "firing")
                        .values(state="acknowledged", acknowledged_at=now, acknowledged_by=by)).rowcount
    if not done:
        return None
    return _alert(conn.execute(select(alerts).where(_A.id == alert_id)).one())


def claim_emails(conn: Connection, *, now: datetime, hold: timedelta, limit: int = 20) -> list[dict[str, Any]]:
    """Due e-mails, held for `hold` (a sender that dies mid-send leaves them due again after it)."""
    e = alert_emails.c
    due = (select(e.id).where(e.state == "pending", e.next_attempt_at <= now).order_by(e.next_attempt_at)
           .limit(limit).with_for_update(skip_locked=True))
    rows = conn.execute(update(alert_emails).where(e.id.in_(due.scalar_subquery()))
                        .values(next_attempt_at=now + hold, attempts=e.attempts + 1,
                                first_attempt_at=func.coalesce(e.first_attempt_at, now))
                        .returning(e.id, e.notification_id, e.channel, e.attempts, e.first_attempt_at)).mappings()
    return [dict(r) for r in rows]


def notification_message(conn: Connection, notification_id: int) -> tuple[str, bytes] | None:
    """(message id, content) of the alert.notification a notification was sent as."""
    n = alert_notifications.c
    row = conn.execute(select(messages.c.message_id, messages.c.content)
                       .join(alert_notifications, n.message_id == messages.c.message_id)
                       .where(n.id == notification_id)).first()
    return None if row is None else (row[0], row[1])


def finish_email(conn: Connection, *, email_id: int, state: str, next_attempt_at: datetime,
                 error: str | None, sent_at: datetime | None) -> None:
    e = alert_emails.c
    conn.execute(update(alert_emails).where(e.id == email_id).values(
        state=state, next_attempt_at=next_attempt_at, last_error=None if error is None else error[:4000],
        sent_at=sent_at))
