"""Engines for SQLite (WAL, one writer) and PostgreSQL, and schema migration at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_S = 5.0
_LOCK_KEY = 0x6761746577  # PostgreSQL advisory lock: one migrator at a time across processes


@dataclass(frozen=True)
class Engines:
    """`write` runs migrations and write transactions, `read` serves queries (one engine on PostgreSQL).

    On SQLite, `sqlite_writer` is a synchronous engine on the stdlib driver: the committer runs each
    whole batch on it in one thread, paying one thread hop per batch instead of several per statement."""

    write: AsyncEngine
    read: AsyncEngine
    sqlite_writer: Engine | None = None

    @property
    def dialect(self) -> str:
        return self.write.dialect.name

    async def dispose(self) -> None:
        if self.sqlite_writer is not None:
            self.sqlite_writer.dispose()
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()


def _sqlite_pragmas(engine: AsyncEngine | Engine, *, immediate: bool) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        # A writer takes the lock up front; a deferred BEGIN that later writes can fail with BUSY at once.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass(frozen=True, kw_only=True)
class StoreUrl:
    shown: str  # the URL with its password hidden, to print
    sqlite_file: str | None  # the database file, on SQLite


def describe_url(url: str) -> StoreUrl:
    parsed = make_url(url)
    return StoreUrl(shown=parsed.render_as_string(hide_password=True),
                    sqlite_file=parsed.database if parsed.get_backend_name() == "sqlite" else None)


def create_engines(url: str, *, pool_size: int = 10) -> Engines:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # SQLite has one writer at a time: a single write connection queues writers in-process.
        write = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
        read = create_async_engine(url, pool_size=4, max_overflow=4)
        writer = create_engine(parsed.set(drivername="sqlite"), pool_size=1, max_overflow=0, pool_timeout=60,
                               connect_args={"check_same_thread": False})
        _sqlite_pragmas(write, immediate=True)
        _sqlite_pragmas(read, immediate=False)
        _sqlite_pragmas(writer, immediate=True)
        return Engines(write=write, read=read, sqlite_writer=writer)
    # pre-ping: a connection the server dropped (restart, failover) is replaced at checkout, not handed out;
    # a bounded connect: while the server is away a caller hears so in seconds, not after asyncpg's 60 s.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                                 pool_timeout=10, connect_args={"timeout": CONNECT_TIMEOUT_S})
    return Engines(write=engine, read=engine)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _upgrade(sync_conn: Connection) -> None:
    if sync_conn.dialect.name == "postgresql":
        sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    cfg = _alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def migrate(engines: Engines) -> None:
    """Bring the schema to the newest revision (safe to run from several processes at once)."""
    async with engines.write.begin() as conn:
        await conn.run_sync(_upgrade)


def _current(sync_conn: Connection) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


async def current_revision(engines: Engines) -> str | None:
    async with engines.read.connect() as conn:
        return await conn.run_sync(_current)
