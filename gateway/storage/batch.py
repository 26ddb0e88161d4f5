"""Group commit: many short write jobs share one transaction, so commits are paid once per batch."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection

from gateway.loops import Loop
from gateway.storage.faults import StoreUnavailable, as_unavailable

if TYPE_CHECKING:
    from gateway.storage.db import Engines

# A handler takes every item of its kind in the batch and returns one result (or exception) per item.
# Handlers are plain functions on a sync Connection: on SQLite they run in the writer thread, on
# PostgreSQL through AsyncConnection.run_sync. The same code serves both.
Handler = Callable[[Connection, list[Any]], list[Any]]
# The name services use for the connection a handler is handed, so they need not import SQLAlchemy.
Transaction = Connection


DEFERRED = "gateway.deferred"
# Callables a handler registers to undo what it did in memory (claims counted) if its transaction does not commit.
UNDO = "gateway.undo"
PROBE_EVERY_S = 0.5  # while down and idle, how often the committer tries a transaction of its own


class Committer:
    """Runs write work in batches; a caller resumes only after its batch has committed."""

    def __init__(self, engines: Engines, *, max_batch: int = 256) -> None:
        self.engines = engines
        self.max_batch = max_batch
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer") if engines.sqlite_writer is not None else None
        )
        self._queue: asyncio.Queue[tuple[Handler, Any, asyncio.Future]] = asyncio.Queue()
        # Called once per transaction, last, with what the handlers deferred (conn.info[DEFERRED]).
        self.before_commit: Callable[[Connection, list[Any]], None] | None = None
        # Required: while the store refuses transactions, the process cannot accept anything.
        self.loop = Loop("committer", self._step, interval_s=0.0)
        self._busy = False
        self._idle = asyncio.Event()

    def start(self) -> None:
        self.loop.start()

    async def stop(self, *, timeout_s: float = 10.0) -> None:
        """Commit what is queued (bounded by `timeout_s`), then stop; whatever is still queued fails as unavailable."""
        deadline = time.monotonic() + timeout_s
        while self.loop.running and (self._busy or not self._queue.empty()) and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                pass
        await self.loop.stop(timeout_s=max(0.0, deadline - time.monotonic()) + 1.0, interrupt=not self._busy)
        while not self._queue.empty():
            *_, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(StoreUnavailable("the gateway is shutting down; nothing of this request was "
                                                   "written", reason="shutting down"))
        if self._thread is not None:
            # A writer thread stuck on a locked file must not hold the process: it is a daemon-less pool, so
            # wait only when the deadline allows, else leave it (the process is exiting).
            self._thread.shutdown(wait=time.monotonic() < deadline, cancel_futures=True)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    async def submit(self, handler: Handler, item: Any) -> Any:
        """Queue one item for `handler`; items of one handler in a batch are handled together."""
        if not self.loop.running:
            return await self._solo(handler, item)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((handler, item, fut))
        return await fut

    async def _transact(self, work: Callable[[Connection], list[Any]]) -> list[Any]:
        """One transaction; a store outage (unreachable, disk full, read-only, locked) raises StoreUnavailable."""
        undo: list[Callable[[], None]] = []
        try:
            writer = self.engines.sqlite_writer
            if writer is not None:
                def in_thread() -> list[Any]:
                    with writer.begin() as conn:
                        return self._run(conn, work, undo)

                return await asyncio.get_running_loop().run_in_executor(self._thread, in_thread)
            async with self.engines.write.begin() as aconn:
                return await aconn.run_sync(self._run, work, undo)
        except BaseException as exc:
            for step in reversed(undo):
                step()
            typed = as_unavailable(exc) if isinstance(exc, Exception) else None
            if typed is not None and typed is not exc:
                raise typed from exc
            raise

    def _run(self, conn: Connection, work: Callable[[Connection], list[Any]],
             undo: list[Callable[[], None]]) -> list[Any]:
        """One transaction's handlers; what they deferred (the exchange log's one append) runs last, inside it."""
        conn.info[UNDO] = undo
        try:
            if self.before_commit is None:
                return work(conn)
            conn.info[DEFERRED] = []
            out = work(conn)
            self.before_commit(conn, conn.info[DEFERRED])
            return out
        finally:
            conn.info.pop(DEFERRED, None)
            conn.info.pop(UNDO, None)

    async def _solo(self, handler: Handler, item: Any) -> Any:
        (result,) = await self._transact(lambda conn: handler(conn, [item]))
        if isinstance(result, BaseException):
            raise result
        return result

    async def _step(self) -> float:
        """One batch. A batch the store refused fails the loop's step, so the loop reports down and backs off;
        while down and idle it tries a transaction of its own, so it is seen up again without traffic."""
        if self.loop.state == "down" and self._queue.empty():
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=PROBE_EVERY_S)
            except TimeoutError:
                await self._transact(_probe)
                return 0.0
        else:
            if self._queue.empty():
                self._idle.set()
            first = await self._queue.get()
        batch = [first]
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._busy = True
        try:
            outage = await self._commit(batch)
        except asyncio.CancelledError:
            for *_, fut in batch:
                if not fut.done():
                    fut.cancel()
            raise
        finally:
            self._busy = False
            if self._queue.empty():
                self._idle.set()
        if outage is not None:
            raise outage
        return 0.0

    async def _commit(self, batch: list[tuple[Handler, Any, asyncio.Future]]) -> StoreUnavailable | None:
        """Commit a batch; returns the outage that refused it (every caller got it), if that was the reason."""
        def work(conn: Connection) -> list[Any]:
            out: list[Any] = []
            for handler, group in groupby(batch, key=lambda entry: entry[0]):
                out.extend(handler(conn, [item for _, item, _ in group]))
            return out

        try:
            results = await self._transact(work)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1 or isinstance(exc, StoreUnavailable):
                # An outage refuses every item alike: running each alone would only wait on the store N times.
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return exc if isinstance(exc, StoreUnavailable) else None
            # Something failed: the batch rolled back whole; run each alone so only the culprit fails.
            outage = None
            for entry in batch:
                outage = await self._commit([entry]) or outage
            return outage
        for (_, _, fut), result in zip(batch, results):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        return None


def _probe(conn: Connection) -> list[Any]:
    conn.execute(text("SELECT 1"))
    return []
