"""Chain and checkpoint verification as a background job a page can start and follow."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from gateway.audit.chain import keystore_resolver
from gateway.audit.stream import log_size
from gateway.audit.verify import VerifyReport, verify_store
from gateway.wire import Clock
from gateway.storage.db import Engines
from security.keys import KeyStore

KEEP_JOBS = 20


@dataclass
class VerifyJob:
    id: str
    started_by: str
    started_at: datetime
    total: int
    done: int = 0
    finished_at: datetime | None = None
    report: VerifyReport | None = None
    error: str | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        if self.report is None:
            return "running"
        return "intact" if self.report.ok else "broken"

    @property
    def fraction(self) -> float:
        return 1.0 if self.report is not None else (min(self.done / self.total, 1.0) if self.total else 0.0)


class VerifyJobs:
    """Jobs of this process (a page polls the process that started it); at most one runs at a time."""

    def __init__(self, *, engines: Engines, keys: KeyStore | None, clock: Clock) -> None:
        self.engines = engines
        self.keys = keys
        self.clock = clock
        self._jobs: dict[str, VerifyJob] = {}

    def running(self) -> VerifyJob | None:
        return next((j for j in self._jobs.values() if j.state == "running"), None)

    async def start(self, *, started_by: str) -> VerifyJob:
        running = self.running()
        if running is not None:  # one walk of the whole log at a time is enough for everyone
            return running
        # Registered before the first await, so two requests at once share one job.
        job = VerifyJob(id=secrets.token_urlsafe(12), started_by=started_by, started_at=self.clock(), total=0)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"verify-{job.id}")
        for old in list(self._jobs)[:-KEEP_JOBS]:
            del self._jobs[old]
        return job

    async def _run(self, job: VerifyJob) -> None:
        def progress(done: int) -> None:
            job.done = done

        try:
            job.total = await log_size(self.engines)
            job.report = await verify_store(self.engines, progress=progress,
                                            public_key=keystore_resolver(self.keys) if self.keys else None)
        except Exception as exc:  # noqa: BLE001  (shown on the page; the job ends, the process goes on)
            job.error = f"{type(exc).__name__}: {exc}"
        job.finished_at = self.clock()

    def get(self, job_id: str) -> VerifyJob | None:
        return self._jobs.get(job_id)

    def latest(self) -> VerifyJob | None:
        return next(reversed(self._jobs.values()), None)

    def latest_finished(self) -> VerifyJob | None:
        """The newest job with a verdict (intact, broken or failed), for the metrics."""
        return next((j for j in reversed(self._jobs.values()) if j.state != "running"), None)

    async def stop(self) -> None:
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
        await asyncio.gather(*(j.task for j in self._jobs.values() if j.task is not None), return_exceptions=True)
