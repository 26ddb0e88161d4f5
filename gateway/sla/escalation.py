"""Breach detection: legs that became overdue raise `escalation.raised`, once per leg, through the pipeline."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from gateway.canonical.messages import AnyMessage, parse_message
from gateway.loops import Loop
from gateway.pipeline.accept import Accepter
from gateway.pipeline.ports import derived_message_id
from gateway.sla.engine import SlaReport
from gateway.sla.legs import Leg
from gateway.wire import Clock
from gateway.sla.live import live_report
from gateway.sla.policy import SlaConfig
from gateway.storage.store import Store

log = logging.getLogger("gateway.sla")
SOURCE = "sla-escalation"


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, timezone.utc).isoformat().replace("+00:00", "Z")


def escalations(report: SlaReport) -> list[AnyMessage]:
    """One escalation per overdue leg. Id and content derive from the leg alone (it occurred when the
    deadline passed), so raising it again, from any process, is answered as a duplicate."""
    out = []
    for leg in report.legs:
        if leg.status != "overdue":
            continue
        out.append(parse_message({
            "message_id": str(derived_message_id(leg.start_message_id, f"escalation/{leg.rule}")),
            "type": "escalation.raised",
            "case_id": leg.case_id,
            "occurred_at": _iso(leg.deadline_at),
            "body": {"rule": leg.rule, "deadline_at": _iso(leg.deadline_at), "reason": _reason(leg)},
        }))
    return out


def _reason(leg: Leg) -> str:
    return (f"SLA {leg.rule}: not met by its deadline {_iso(leg.deadline_at)} (started by message"
            f" {leg.start_message_id} at {_iso(leg.start_at)}; waiting on {leg.counterpart})")


class EscalationScheduler:
    """Looks for overdue legs every `interval_s` and accepts an escalation for each new one."""

    def __init__(self, *, store: Store, accepter: Accepter, config: SlaConfig, clock: Clock,
                 interval_s: float = 30.0) -> None:
        self.store = store
        self.accepter = accepter
        self.config = config
        self.clock = clock
        self.interval_s = interval_s
        self.loop = Loop("sla-escalations", self._step, interval_s=interval_s)
        # A pass is only worth it when a message arrived or an open leg's deadline passed since the last.
        self._seen_up_to: int | None = None
        self._next_deadline_us: int | None = None
        # Overdue legs per rule as of the last full pass (the metrics read it; a skipped pass changed nothing).
        self.overdue_by_rule: dict[str, int] | None = None

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()  # a pass cut short is redone by the next one: escalations are idempotent

    async def check(self) -> int:
        """One pass; returns how many escalations were newly raised (0 when nothing could have changed)."""
        now = self.clock()
        latest = await self.store.latest_message_row()
        now_us = int(now.timestamp() * 1_000_000)
        if (latest == self._seen_up_to and latest is not None
                and (self._next_deadline_us is None or now_us < self._next_deadline_us)):
            return 0
        report = await live_report(store=self.store, config=self.config, as_of=now)
        self._seen_up_to = latest
        self._next_deadline_us = min((leg.deadline_at for leg in report.legs if leg.status == "open"), default=None)
        overdue = dict.fromkeys(self.config.policy.rules, 0)
        for leg in report.legs:
            if leg.status == "overdue":
                overdue[leg.rule] = overdue.get(leg.rule, 0) + 1
        self.overdue_by_rule = overdue
        raised = 0
        for message in escalations(report):
            result = await self.accepter.accept(message=message, source=SOURCE)
            if not result.duplicate:
                raised += 1
                log.info("escalation raised", extra={"message_id": result.message_id, "rule": message.body.rule})
        return raised

    async def _step(self) -> None:
        await self.check()
