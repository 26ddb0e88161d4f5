"""One helper for every background loop: a step run again and again, jittered back-off on failure, its state."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.storage.faults import outage_reason

log = logging.getLogger("gateway.loops")

# A step returns how long to wait before the next one (None: the loop's interval).
Step = Callable[[], Awaitable[float | None]]


class Loop:
    """Runs `step` until stopped. A failing step does not end the loop: it is retried after a jittered,
    growing pause (capped at `backoff_max_s`, so a store that comes back is seen within that long), and the
    loop reports `down` until a step succeeds again. `wake()` cuts an idle wait short, never a back-off."""

    def __init__(self, name: str, step: Step, *, interval_s: float, initial_delay_s: float = 0.0,
                 backoff_base_s: float = 0.1, backoff_max_s: float = 2.0, required: bool = True) -> None:
        self.name = name
        self._step = step
        self.interval_s = interval_s
        self.initial_delay_s = initial_delay_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.required = required  # /readyz fails while a required loop is down
        self.state = "stopped"  # stopped, starting, up, down
        self.last_success: float | None = None  # wall-clock time of the last successful step
        self.last_error: str | None = None
        self.failures = 0  # consecutive
        self.total_failures = 0
        self._down_since: float | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._in_step = False

    # --- control -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self.state = "starting"
        self._task = asyncio.create_task(self._run(), name=f"loop:{self.name}")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, *, timeout_s: float = 5.0, interrupt: bool = True) -> None:
        """Stop after the current step (bounded by `timeout_s`); `interrupt` cancels a step at once, for
        steps that are safe to cut (an idle wait, a read-only pass)."""
        task = self._task
        self._stop.set()
        self._wake.set()
        if task is None:
            self.state = "stopped"
            return
        if interrupt or not self._in_step:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
        if not done:
            log.warning("loop %s did not stop within %.1f s; cancelled", self.name, timeout_s)
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("loop %s ended with an error", self.name, exc_info=task.exception())
        self._task = None
        self.state = "stopped"

    # --- state ---------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Not known to be failing: running, and its last step (if any) succeeded."""
        return self.running and self.state != "down"

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state if self.running or self.state == "stopped" else "dead",
                               "required": self.required,
                               "last_success": _iso(self.last_success) if self.last_success else None,
                               "failures": self.failures, "total_failures": self.total_failures}
        if self.state == "down" and self.last_error:
            out["error"] = self.last_error
            if self._down_since is not None:
                out["down_for_s"] = round(time.monotonic() - self._down_since, 1)
        return out

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.initial_delay_s
        wakeable = True
        while not self._stop.is_set():
            if delay > 0:
                await self._pause(delay, wakeable=wakeable)
                if self._stop.is_set():
                    break
            self._wake.clear()
            self._in_step = True
            try:
                wait = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                delay, wakeable = self._backoff(), False
                continue
            finally:
                self._in_step = False
            self._succeeded()
            delay, wakeable = (self.interval_s if wait is None else wait), True

    async def _pause(self, seconds: float, *, wakeable: bool) -> None:
        event = self._wake if wakeable else self._stop
        if event.is_set():
            return
        try:
            await asyncio.wait_for(event.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _backoff(self) -> float:
        # Equal jitter: processes that failed together do not come back in step, and none hammers the store.
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(self.failures - 1, 16))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _failed(self, exc: Exception) -> None:
        reason = outage_reason(exc)
        self.failures += 1
        self.total_failures += 1
        # /readyz is public: the type and an outage's reason only; the full text goes to the log.
        self.last_error = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        if self.state != "down":
            self._down_since = time.monotonic()
            self.state = "down"
            if reason is not None:  # an outage is expected to pass: no traceback, one line
                log.warning("loop %s is down (%s); backing off and retrying", self.name, reason,
                            extra={"loop": self.name})
            else:
                log.exception("loop %s failed; backing off and retrying", self.name, extra={"loop": self.name})
        else:
            log.debug("loop %s still failing: %s", self.name, self.last_error)

    def _succeeded(self) -> None:
        if self.state == "down":
            down_for = time.monotonic() - (self._down_since or time.monotonic())
            log.warning("loop %s recovered after %d failed steps (%.1f s)", self.name, self.failures, down_for,
                        extra={"loop": self.name})
        self.state = "up"
        self.failures = 0
        self._down_since = None
        self.last_success = time.time()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
