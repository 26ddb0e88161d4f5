"""A thread pool for signature checks whose queue cannot grow: when it is full the caller does the work itself."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class BoundedExecutor(ThreadPoolExecutor):
    """At most `max_pending` calls queued or running; beyond that `submit` runs the call in the caller's thread.

    A flood of (invalid) signatures then slows the event loop that accepts them, as it would without the pool,
    instead of piling up work, memory and waiting time behind the threads."""

    def __init__(self, max_workers: int, *, max_pending: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self.ran_inline = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            full = self._pending >= self.max_pending
            if not full:
                self._pending += 1
        if full:
            self.ran_inline += 1
            done: Future = Future()
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                done.set_exception(exc)
            return done
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1
