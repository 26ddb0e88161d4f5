"""Fixtures: store URLs (SQLite always; PostgreSQL where reachable, mandatory in CI) and live stacks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:  # the harness imports the whole app: unit tests on fakes do without it
    from tests.harness import Stack

PG_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def _reset_postgres(url: str) -> str | None:
    """Empty the test database; return why it cannot be used, or None."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")

    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    try:
        asyncio.run(go())
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {dsn}: {type(exc).__name__}: {exc}"
    return None


@pytest.fixture
def postgres_url() -> str:
    why = _reset_postgres(PG_URL)
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (PostgreSQL tests are mandatory in CI)")
        pytest.skip(why)
    return PG_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    from tests.harness import Stack

    s = Stack(tmp_path, database_url)
    try:
        yield s
    finally:
        s.close()
