"""Group commit: many short write jobs share one transaction, so commits are paid once per batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from gateway.storage.db import Engines

# A handler takes every item of its kind in the batch and returns one result (or exception) per item.
# Handlers are plain functions on a sync Connection: on SQLite they run in the writer thread, on
# PostgreSQL through AsyncConnection.run_sync. The same code serves both.
Handler = Callable[[Connection, list[Any]], list[Any]]


DEFERRED = "gateway.deferred"


class Committer:
    """Runs write work in batches; a caller resumes only after its batch has committed."""

    def __init__(self, engines: Engines, *, max_batch: int = 256) -> None:
        self.engines = engines
        self.max_batch = max_batch
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer") if engines.sqlite_writer is not None else None
        )
        self._queue: asyncio.Queue[tuple[Handler, Any, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        # Called once per transaction, last, with what the handlers deferred (conn.info[DEFERRED]).
        self.before_commit: Callable[[Connection, list[Any]], None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    async def submit(self, handler: Handler, item: Any) -> Any:
        """Queue one item for `handler`; items of one handler in a batch are handled together."""
        if self._task is None:
            return await self._solo(handler, item)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((handler, item, fut))
        return await fut

    async def _transact(self, work: Callable[[Connection], list[Any]]) -> list[Any]:
        writer = self.engines.sqlite_writer
        if writer is not None:
            def in_thread() -> list[Any]:
                with writer.begin() as conn:
                    return self._run(conn, work)

            return await asyncio.get_running_loop().run_in_executor(self._thread, in_thread)
        async with self.engines.write.begin() as aconn:
            return await aconn.run_sync(self._run, work)

    def _run(self, conn: Connection, work: Callable[[Connection], list[Any]]) -> list[Any]:
        """One transaction's handlers; what they deferred (the exchange log's one append) runs last, inside it."""
        if self.before_commit is None:
            return work(conn)
        conn.info[DEFERRED] = []
        try:
            out = work(conn)
            self.before_commit(conn, conn.info[DEFERRED])
            return out
        finally:
            conn.info.pop(DEFERRED, None)

    async def _solo(self, handler: Handler, item: Any) -> Any:
        (result,) = await self._transact(lambda conn: handler(conn, [item]))
        if isinstance(result, BaseException):
            raise result
        return result

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for *_, fut in batch:
                    if not fut.done():
                        fut.cancel()
                raise

    async def _commit(self, batch: list[tuple[Handler, Any, asyncio.Future]]) -> None:
        def work(conn: Connection) -> list[Any]:
            out: list[Any] = []
            for handler, group in groupby(batch, key=lambda entry: entry[0]):
                out.extend(handler(conn, [item for _, item, _ in group]))
            return out

        try:
            results = await self._transact(work)
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                fut = batch[0][2]
                if not fut.done():
                    fut.set_exception(exc)
                return
            # Something failed: the batch rolled back whole; run each alone so only the culprit fails.
            for entry in batch:
                await self._commit([entry])
            return
        for (_, _, fut), result in zip(batch, results):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
