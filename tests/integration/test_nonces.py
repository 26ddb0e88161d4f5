"""The shared nonce store: a nonce seen by one gateway process is a replay for every other."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from gateway.wire import system_clock
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
        run = uuid.uuid4().hex  # the PostgreSQL test database outlives a run
        soon = datetime.now(timezone.utc) + timedelta(minutes=5)
        assert await a.seen_or_add(f"{run}-1", keyid="k", expires_at=soon) is False
        assert await b.seen_or_add(f"{run}-1", keyid="k", expires_at=soon) is True  # the replay, elsewhere
        assert await b.seen_or_add(f"{run}-1", keyid="other-client", expires_at=soon) is False  # per sender
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        # Past its keep-until by the time it is written (it waited too long): refused, as a replay could be.
        assert await a.seen_or_add(f"{run}-2", keyid="k", expires_at=past) is True
        briefly = datetime.now(timezone.utc) + timedelta(milliseconds=300)
        assert await a.seen_or_add(f"{run}-3", keyid="k", expires_at=briefly) is False
        await asyncio.sleep(0.4)
        assert await b.seen_or_add(f"{run}-3", keyid="k", expires_at=soon) is False  # expired: reusable
    finally:
        await first.dispose()
        await second.dispose()


async def test_one_batch_with_a_pair_twice_records_it_once(database_url: str) -> None:
    engines = create_engines(database_url)
    await migrate(engines)
    try:
        store = SqlNonceStore(store=Store(engines), clock=system_clock)
        soon = datetime.now(timezone.utc) + timedelta(minutes=5)
        run = uuid.uuid4().hex  # the PostgreSQL test database outlives a run
        # Submitted together: on SQLite the committer hands them to one statement; on PostgreSQL they race.
        names = ("x", "y", "x", "z", "y", "x")
        results = await asyncio.gather(*(store.seen_or_add(f"{run}-{n}", keyid="k", expires_at=soon) for n in names))
        for name in set(names):  # whichever came first is new, every other occurrence a replay
            assert sorted(r for n, r in zip(names, results) if n == name) == [False] + [True] * (names.count(name) - 1)
        assert await store.seen_or_add(f"{run}-z", keyid="k", expires_at=soon) is True
    finally:
        await engines.dispose()
