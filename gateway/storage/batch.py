"""Group commit: many short write jobs share one transaction, so commits are paid once per batch."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")
Job = Callable[[AsyncConnection], Awaitable[T]]
log = logging.getLogger("gateway.store")


class Committer:
    """Runs write jobs in batches; a job's caller resumes only after its batch has committed."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

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

    async def run(self, job: Job[T]) -> T:
        if self._task is None:
            async with self.engine.begin() as conn:
                return await job(conn)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, fut))
        return await fut

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.cancel()
                raise

    async def _commit(self, batch: list[tuple[Job, asyncio.Future]]) -> None:
        results: list[object] = []
        try:
            async with self.engine.begin() as conn:
                for job, _ in batch:
                    results.append(await job(conn))
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                _, fut = batch[0]
                if not fut.done():
                    fut.set_exception(exc)
                return
            # One job failed: the batch rolled back whole; run each alone so only the culprit fails.
            for item in batch:
                await self._commit([item])
            return
        for (_, fut), result in zip(batch, results):
            if not fut.done():
                fut.set_result(result)
