"""The escalation pass: a deadline passing with no new message still escalates, once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.bootstrap import build
from tests.harness import default_counterparts
from gateway.canonical.messages import parse_message
from gateway.config import Settings
from gateway.pipeline.ports import derived_message_id
from gateway.samples import SampleCases


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_deadline_passing_without_new_messages_escalates_once(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc))
    container = build(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
                               counterparts_file=default_counterparts(tmp_path)), clock=clock)
    await container.start(run_worker=False)
    try:
        samples = SampleCases(seed=71, now=clock.now - timedelta(hours=1))
        case = samples.case()[0]
        risk = {"message_id": "3c6e0b8a-7f2d-4b1e-9a3c-5d7e9f1a2b4c", "type": "risk.detected",
                "case_id": case["case_id"], "occurred_at": case["occurred_at"],
                "body": {"risk_id": "R-1", "domain": "legal", "level": "R2", "trigger": "no_documents"}}
        for message in (case, risk):
            await container.accepter.accept(message=parse_message(message), source="probation")
        scheduler = container.escalations
        assert await scheduler.check() == 0  # legal.first_action has 23 h left
        assert await scheduler.check() == 0
        clock.now += timedelta(hours=24)  # no new message, but the 24 h deadline has passed
        assert await scheduler.check() == 1
        assert await scheduler.check() == 0  # the same leg is not escalated twice
        escalation_id = derived_message_id(risk["message_id"], "escalation/legal.first_action")
        status = await container.store.message_status(str(escalation_id))
        assert status is not None and status["message"]["type"] == "escalation.raised"
    finally:
        await container.stop()
