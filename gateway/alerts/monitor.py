"""The alert monitor: evaluates the rules every interval, keeps the alerts, sends grouped notifications."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from gateway.alerts.email import Mailer, MailFailure, render
from gateway.alerts.model import Alert, Plan, due_groups, next_due_in, reconcile
from gateway.alerts.rules import evaluate
from gateway.alerts.sources import GatewaySources
from gateway.canonical.messages import AlertItem, AlertNotification, AlertNotificationBody, parse_message
from gateway.loops import Loop
from gateway.mapping import ALERT_RULES, EmailChannel, Mappings, WebhookChannel
from gateway.observability import Metrics
from gateway.pipeline.accept import Accepted, Accepter, Incoming
from gateway.wire import Clock
from gateway.pipeline.retry import DeliveryFailure, RetryDecider
from gateway.storage import alerts as sql
from gateway.storage.batch import Transaction
from gateway.storage.store import Store

log = logging.getLogger("gateway.alerts")
SOURCE = "alert-monitor"
CASE_ID = "gateway-alerts"  # notifications are about the gateway, not a case; the SLA engine never sees them
LEASE_NAME = "alerts"


def _chosen(channel: WebhookChannel | EmailChannel, rule: str) -> bool:
    return not channel.rules or rule in channel.rules


class AlertMonitor:
    """One process at a time evaluates (a lease in the store), so one condition is one alert and one e-mail
    however many gateway processes run; webhooks go out as deliveries through the outbox, e-mail from here."""

    def __init__(self, *, store: Store, accepter: Accepter, sources: GatewaySources, mappings: Callable[[], Mappings],
                 mailer: Mailer, clock: Clock, metrics: Metrics, interval_s: float = 30.0,
                 console_url: str | None = None) -> None:
        self.store = store
        self.accepter = accepter
        self.sources = sources
        self.mappings = mappings
        self.mailer = mailer
        self.clock = clock
        self.metrics = metrics
        self.interval_s = interval_s
        self.console_url = console_url
        self.holder = f"alerts-{uuid.uuid4().hex[:12]}"
        self.lease = timedelta(seconds=max(3 * interval_s, 10.0))
        self._leader_until = 0.0  # monotonic: while this process holds the lease
        self.last_errors: dict[str, str] = {}  # sources not read in the last pass
        self._wait: float | None = None
        self.loop = Loop("alert-monitor", self._step, interval_s=interval_s, required=False)
        self.mail_loop = Loop("alert-email", self._mail_step, interval_s=min(interval_s, 5.0), required=False)
        # One handler object each: the committer groups a batch's items by handler.
        self._lease_handler = self._take_lease
        self._plan_handler = self._apply
        self._notify_handler = self._record_notification
        self._claim_handler = self._claim_emails
        self._finish_handler = self._finish_email

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def leader(self) -> bool:
        return time.monotonic() < self._leader_until

    def start(self) -> None:
        self.loop.start()
        self.mail_loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        await self.mail_loop.stop(interrupt=False, timeout_s=5.0)
        if self.leader:  # hand the lease over at once rather than after it runs out
            try:
                await self.store.committer.submit(self._release, self.clock())
            except Exception:  # noqa: BLE001  (the lease runs out by itself)
                pass

    # --- one pass ----------------------------------------------------------------------------

    async def check(self) -> list[int]:
        """One pass: evaluate, record, notify what is due; the ids of the notifications sent."""
        now = self.clock()
        if not await self.store.committer.submit(self._lease_handler, now):
            self._leader_until = 0.0
            return []
        self._leader_until = time.monotonic() + self.lease.total_seconds() * 0.8
        mappings = self.mappings()
        cfg = mappings.alerts
        current = await sql.open_alerts(self.store.engines)
        facts = await self.sources.gather(now=now, open_alerts=current, thresholds=cfg.thresholds)
        self.last_errors = facts.errors
        conditions, evaluated = evaluate(facts, cfg.thresholds, disabled=cfg.disabled_rules)
        plan = reconcile(current, conditions, evaluated=evaluated, now=now)
        if plan:
            await self.store.committer.submit(self._plan_handler, plan)
            for alert in plan.new:
                if alert.id is not None:
                    log.warning("alert firing", extra={"rule": alert.rule, "subject": alert.subject,
                                                       "alert_id": alert.id, "count": alert.count})
            for alert in plan.resolved:
                log.info("alert resolved", extra={"rule": alert.rule, "subject": alert.subject,
                                                  "alert_id": alert.id})
        alerts = [a for a in current + plan.new if a.id is not None]
        sent = []
        for rule, items in due_groups(alerts, now=now, wait_s=cfg.grouping.wait_s,
                                      max_wait_s=cfg.grouping.max_wait_s).items():
            sent.append(await self._notify(rule, items, mappings, now))
        if sent:
            self.mail_loop.wake()
        await self._gauge()
        self._wait = next_due_in(alerts, now=now, wait_s=cfg.grouping.wait_s, max_wait_s=cfg.grouping.max_wait_s)
        return sent

    async def _step(self) -> float | None:
        self._wait = None
        await self.check()
        # wake when a group falls due, not a whole interval later
        return None if self._wait is None else min(self.interval_s, max(0.05, self._wait))

    def _take_lease(self, conn: Transaction, items: list[datetime]) -> list[bool]:
        got = sql.take_lease(conn, name=LEASE_NAME, holder=self.holder, now=max(items), lease=self.lease)
        return [got] * len(items)

    def _release(self, conn: Transaction, items: list[datetime]) -> list[None]:
        sql.release_lease(conn, name=LEASE_NAME, holder=self.holder, now=max(items))
        return [None] * len(items)

    def _apply(self, conn: Transaction, plans: list[Plan]) -> list[None]:
        for plan in plans:
            sql.apply_plan(conn, plan)
        return [None] * len(plans)

    async def _gauge(self) -> None:
        counts = await sql.state_counts(self.store.engines)
        for rule in ALERT_RULES:
            for state in ("firing", "acknowledged"):
                self.metrics.alerts.labels(rule, state).set(counts.get((rule, state), 0))

    # --- notifications -----------------------------------------------------------------------

    def _message(self, rule: str, items: list[Alert], mappings: Mappings, now: datetime) -> AlertNotification:
        webhooks = [c.name for c in mappings.alerts.channels if isinstance(c, WebhookChannel) and _chosen(c, rule)]
        body = AlertNotificationBody(
            rule=rule, channels=tuple(webhooks), count=sum(a.count for a in items),
            alerts=tuple(AlertItem(alert_id=a.id, subject=a.subject[:400], state=a.notice() or a.state,
                                   severity=a.severity, summary=a.summary[:4000], count=a.count,
                                   started_at=a.started_at, resolved_at=a.resolved_at) for a in items))
        return AlertNotification(message_id=uuid.uuid4(), type="alert.notification", case_id=CASE_ID,
                                 occurred_at=now, body=body)

    async def _notify(self, rule: str, items: list[Alert], mappings: Mappings, now: datetime) -> int:
        message = self._message(rule, items, mappings, now)
        emails = [c.name for c in mappings.alerts.channels if isinstance(c, EmailChannel) and _chosen(c, rule)]
        nid, accepted = await self.store.committer.submit(self._notify_handler, (message, items, emails, now))
        self.accepter.notify(accepted)  # its webhook deliveries start now if this process's worker has room
        log.info("alert notification", extra={"rule": rule, "notification_id": nid, "alerts": len(items),
                                               "count": message.body.count})
        return nid

    def _record_notification(self, conn: Transaction, batch: list[tuple[AlertNotification, list[Alert], list[str],
                                                                         datetime]]) -> list[tuple[int, Accepted]]:
        # The message (with its webhook deliveries), the notification, its e-mails and the alerts' marks: one
        # transaction, so a crash either sends it all later or never half of it.
        out = []
        for message, items, emails, now in batch:
            (accepted,) = self.accepter.accept_many(conn, [Incoming(
                message=message, source=SOURCE, received_at=now, request_bytes=len(message.to_json()),
                hop="derived")])
            nid = sql.insert_notification(conn, rule=message.body.rule, now=now, message_id=str(message.message_id),
                                          items=items, email_channels=emails)
            sql.mark_notified(conn, items)
            out.append((nid, accepted))
        return out

    # --- e-mail ------------------------------------------------------------------------------

    async def _mail_step(self) -> float | None:
        if not self.leader:
            return None
        await self.send_due_emails()
        return None

    async def send_due_emails(self) -> int:
        """Send the e-mails that are due; each failure is recorded on its row with the next try."""
        mappings = self.mappings()
        channels = {c.name: c for c in mappings.alerts.channels if isinstance(c, EmailChannel)}
        hold = max((c.timeout_s for c in channels.values()), default=30.0) * 2
        claimed = await self.store.committer.submit(self._claim_handler, (self.clock(), timedelta(seconds=hold)))
        for row in claimed:
            await self._send_one(row, channels.get(row["channel"]))
        return len(claimed)

    def _claim_emails(self, conn: Transaction, items: list[tuple[datetime, timedelta]]) -> list[list[dict]]:
        out = []
        for now, hold in items:
            rows = sql.claim_emails(conn, now=now, hold=hold)
            for row in rows:
                row["message_id"], row["content"] = sql.notification_message(conn, row["notification_id"]) or (None,
                                                                                                             None)
            out.append(rows)
        return out

    async def _send_one(self, row: dict[str, Any], channel: EmailChannel | None) -> None:
        started = self.clock()
        raw = b""
        failure: DeliveryFailure | None = None
        code = None
        if channel is None or row["content"] is None:
            failure = DeliveryFailure(f"no e-mail channel {row['channel']} in alerts.yaml", retryable=False)
        else:
            notification = parse_message(row["content"])
            assert isinstance(notification, AlertNotification)
            message = render(notification, channel=channel, console_url=self.console_url)
            raw = message.as_bytes()
            try:
                await self.mailer.send(channel, message)
            except MailFailure as exc:
                failure, code = DeliveryFailure(exc.reason, retryable=exc.retryable), exc.code
            except Exception as exc:  # noqa: BLE001  (a mailer bug must not stop the loop)
                failure = DeliveryFailure(f"{type(exc).__name__}: {exc}", retryable=True)
        now = self.clock()
        if failure is None:
            state, next_at, reason = "sent", now, None
        else:
            policy = channel.retry if channel is not None else None
            decision = (RetryDecider(policy).decide(failure, attempt=row["attempts"],
                                                    first_attempt_at=row["first_attempt_at"] or started, now=now)
                        if policy is not None else None)
            if decision is not None and decision.retry_in is not None:
                state, next_at, reason = "pending", now + timedelta(seconds=decision.retry_in), decision.reason
            else:
                state, next_at, reason = "dead", now, decision.reason if decision else failure.reason
        self.metrics.alert_emails.labels({"sent": "sent", "pending": "retry", "dead": "dead"}[state]).inc()
        hop = {"message_id": row["message_id"], "delivery_id": None, "hop": "attempt", "peer": row["channel"],
               "attempt": row["attempts"], "request_in_at": None, "request_out_at": started, "response_in_at": now,
               "response_out_at": now, "request_bytes": len(raw), "response_bytes": None, "status_code": code,
               "result": {"sent": "delivered", "pending": "retry", "dead": "dead"}[state], "error": reason,
               "case_id": CASE_ID, "request_raw": raw or None}
        await self.store.committer.submit(self._finish_handler, (row["id"], state, next_at, reason,
                                                                 now if state == "sent" else None, hop))
        if failure is not None:
            log.warning("alert e-mail not sent", extra={"channel": row["channel"], "attempt": row["attempts"],
                                                        "error": reason, "next": state})

    def _finish_email(self, conn: Transaction, items: list[tuple]) -> list[None]:
        for email_id, state, next_at, reason, sent_at, hop in items:
            sql.finish_email(conn, email_id=email_id, state=state, next_attempt_at=next_at, error=reason,
                             sent_at=sent_at)
            self.store.insert_exchanges(conn, [hop])  # every e-mail attempt is a hop of the exchange log
        return [None] * len(items)


def describe(alert: Alert) -> dict[str, Any]:
    """An alert as the acknowledgement's exchange-log record keeps it."""
    return {"alert_id": alert.id, "rule": alert.rule, "subject": alert.subject, "severity": alert.severity,
            "count": alert.count, "fired_at": alert.fired_at.isoformat(), "summary": alert.summary}


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
