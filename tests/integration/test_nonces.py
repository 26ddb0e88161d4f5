"""The shared nonce store: a nonce seen by one gateway process is a replay for every other."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gateway.pipeline.ports import system_clock
from gateway.storage.db import create_engines, migrate
from gateway.storage.nonces import SqlNonceStore
from gateway.storage.store import Store


async def test_a_nonce_is_recorded_once_across_processes_until_it_expires(database_url: str) -> None:
    # Two stores on one database stand for two gateway processes.
    first, second = create_engines(database_url), create_engines(database_url)
    await migrate(first)
    try:
        a = SqlNonceStore(store=Store(first), clock=system_clock)
        b = SqlNonceStore(store=Store(second), clock=system_clock)
        soon = datetime.now(timezone.utc) + timedelta(minutes=5)
        assert await a.seen_or_add("n-1", keyid="k", expires_at=soon) is False
        assert await b.seen_or_add("n-1", keyid="k", expires_at=soon) is True  # the replay, elsewhere
        assert await b.seen_or_add("n-1", keyid="other-client", expires_at=soon) is False  # per sender
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        assert await a.seen_or_add("n-2", keyid="k", expires_at=past) is False
        assert await b.seen_or_add("n-2", keyid="k", expires_at=soon) is False  # expired: purged, reusable
    finally:
        await first.dispose()
        await second.dispose()
