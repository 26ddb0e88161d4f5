"""What people do with alerts: see them with their notifications, and acknowledge one (an audited act)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.alerts.model import Alert
from gateway.alerts.monitor import AlertMonitor, describe, dumps
from gateway.canonical.errors import NotFound
from gateway.wire import Clock
from gateway.storage import alerts as sql
from gateway.storage.batch import Transaction
from gateway.storage.hops import action_row
from gateway.storage.store import Store
from security.access import Principal


@dataclass
class AlertsView:
    alerts: list[Alert]
    notifications: list[dict[str, Any]]
    monitor: dict[str, Any] = field(default_factory=dict)  # this process's monitor: leader, loops, sources failing

    @property
    def open(self) -> list[Alert]:
        return [a for a in self.alerts if a.open]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if not a.open]


class AlertService:
    def __init__(self, *, store: Store, clock: Clock, monitor: AlertMonitor | None = None) -> None:
        self.store = store
        self.clock = clock
        self.monitor = monitor
        self._ack_handler = self._acknowledge

    async def view(self) -> AlertsView:
        engines = self.store.engines
        monitor: dict[str, Any] = {}
        if self.monitor is not None:
            monitor = {"running": self.monitor.loop.running, "leader": self.monitor.leader,
                       "loop": self.monitor.loop.snapshot(), "mail": self.monitor.mail_loop.snapshot(),
                       "errors": dict(self.monitor.last_errors)}
        return AlertsView(await sql.recent_alerts(engines), await sql.recent_notifications(engines), monitor)

    async def acknowledge(self, *, alert_id: int, principal: Principal) -> Alert:
        """Firing -> acknowledged, with an `admin` record in the exchange log in the same transaction; an alert
        already acknowledged or resolved is left as it is (two people pressing at once make one record)."""
        done = await self.store.committer.submit(self._ack_handler, (alert_id, principal, self.clock()))
        if done is not None:
            return done
        alert = await sql.get_alert(self.store.engines, alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return alert

    def _acknowledge(self, conn: Transaction, items: list[tuple[int, Principal, datetime]]) -> list[Alert | None]:
        out = []
        for alert_id, principal, now in items:
            alert = sql.acknowledge(conn, alert_id=alert_id, by=principal.client_id, now=now)
            if alert is not None:
                self.store.insert_exchanges(conn, [action_row(
                    hop="admin", peer="alerts", at=now, result="acknowledged",
                    error=f"alert {alert_id} acknowledged: {alert.rule} {alert.subject}"[:4000],
                    client=principal.client_id, signer=principal.keyid,
                    request_raw=dumps({"action": "acknowledge", "alert": describe(alert),
                                       "before": {"state": "firing"},
                                       "after": {"state": "acknowledged", "by": principal.client_id}}))])
            out.append(alert)
        return out
