"""The signature-check pool never queues more than its bound: past it, the caller does the work."""

from __future__ import annotations

import threading

import pytest

from security.offload import BoundedExecutor


def test_past_the_bound_the_call_runs_in_the_callers_thread() -> None:
    pool = BoundedExecutor(1, max_pending=2, thread_name_prefix="t")
    release = threading.Event()
    busy = [pool.submit(release.wait, 10) for _ in range(2)]  # one running, one queued: the bound
    caller = threading.get_ident()
    inline = pool.submit(threading.get_ident)
    assert inline.done() and inline.result() == caller and pool.ran_inline == 1
    release.set()
    assert all(f.result(timeout=10) for f in busy)
    pooled = pool.submit(threading.get_ident)
    assert pooled.result(timeout=10) != caller and pool.ran_inline == 1  # room again: back on the pool
    pool.shutdown()


def test_an_inline_failure_reaches_the_caller_through_the_future() -> None:
    pool = BoundedExecutor(1, max_pending=0)
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result()
    pool.shutdown()
