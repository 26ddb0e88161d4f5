"""The live report over a store: equal to the offline one on its events export, per case and as messages arrive."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.console_store import corpus
from gateway.audit.export import iter_event_lines
from gateway.sla.engine import compute_report
from gateway.sla.events import parse_event_lines
from gateway.sla.live import live_case_report, live_report
from gateway.storage.db import create_engines, migrate
from gateway.storage.personal import PersonSeal
from gateway.storage.store import Store
from security.pii import PiiCipher
from tests.sla.factory import CONFIG

PII = PiiCipher({"k1": b"k" * 32}, hash_key=b"h" * 32)
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def _rows(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"message_id": m["message_id"], "type": m["type"], "case_id": m["case_id"],
             "occurred_at": m["occurred_at"], "received_at": m["received_at"], "source": "probation",
             "content_hash": hashlib.sha256(m["content"]).hexdigest(), "content": m["content"],
             "accept_response": "{}"} for m in messages]


async def _insert(store: Store, messages: list[dict[str, Any]]) -> None:
    async with store.engines.write.begin() as conn:
        await conn.run_sync(lambda sync: store.insert_messages(sync, _rows(messages)))


async def _offline(store: Store, as_of: datetime):  # noqa: ANN202
    lines = [line async for line in iter_event_lines(store=store)]
    return compute_report(events=parse_event_lines(lines), policy=CONFIG.policy, calendar=CONFIG.calendar,
                          kinds=CONFIG.kinds, as_of=as_of)


async def test_live_report_follows_arrivals_and_each_case_report_equals_its_legs(database_url: str) -> None:
    engines = create_engines(database_url)
    await migrate(engines)
    store = Store(engines, personal=PersonSeal(PII))
    messages = corpus(3000, seed=3)  # a year of cases in acceptance order, persons sealed at rest
    try:
        for part in (messages[:1000], messages[1000:1001], messages[1001:]):
            await _insert(store, part)  # the live report reads only what is new each time
            for as_of in (AS_OF, AS_OF - timedelta(days=200), AS_OF + timedelta(minutes=1)):
                live = await live_report(store=store, config=CONFIG, as_of=as_of)
                offline = await _offline(store, as_of)
                assert live.legs == offline.legs and live.to_json() == offline.to_json()
        whole = await live_report(store=store, config=CONFIG, as_of=AS_OF)
        cases = sorted({m["case_id"] for m in messages})
        for case_id in random.Random(1).sample(cases, 25):
            one = await live_case_report(store=store, config=CONFIG, case_id=case_id, as_of=AS_OF)
            assert one.legs == [leg for leg in whole.legs if leg.case_id == case_id]
        assert any(leg.stop_at is None for leg in whole.legs) and any(leg.stop_at for leg in whole.legs)
    finally:
        await engines.dispose()
