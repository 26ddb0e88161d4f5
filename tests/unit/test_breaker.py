"""CircuitBreaker: per instance, opened by consecutive failures, half-open after its pause, closed by a success."""

from __future__ import annotations

from gateway.mapping import BreakerPolicy
from gateway.pipeline.retry import PROBES_KEPT, CircuitBreaker

POLICY = BreakerPolicy(failure_threshold=3, reset_after_s=30.0)
T = 1000.0  # monotonic seconds, injected


def opened(instance: str = "mio-kz-35") -> CircuitBreaker:
    breaker = CircuitBreaker()
    for delivery_id in (1, 2, 3):
        breaker.failure(instance, POLICY, now=T, delivery_id=delivery_id)
    return breaker


def test_it_opens_at_the_threshold() -> None:
    breaker = CircuitBreaker()
    assert not breaker.failure("mio-kz-35", POLICY, now=T)
    assert not breaker.failure("mio-kz-35", POLICY, now=T)
    assert breaker.state("mio-kz-35", now=T) == "closed"
    assert breaker.failure("mio-kz-35", POLICY, now=T)
    assert breaker.state("mio-kz-35", now=T) == "open"
    assert breaker.is_open("mio-kz-35", now=T)
    assert breaker.opened_at("mio-kz-35") == T
    assert breaker.open_until("mio-kz-35") == T + POLICY.reset_after_s


def test_it_blocks_until_the_reset_time_then_is_half_open() -> None:
    breaker = opened()
    assert breaker.blocked("mio-kz-35", now=T + 29.9)
    assert not breaker.is_half_open("mio-kz-35")
    assert not breaker.blocked("mio-kz-35", now=T + 30.0)
    assert breaker.is_half_open("mio-kz-35")
    assert breaker.state("mio-kz-35", now=T + 30.0) == "half_open"


def test_is_open_has_no_side_effect() -> None:
    breaker = opened()
    assert not breaker.is_open("mio-kz-35", now=T + 31)
    assert not breaker.is_half_open("mio-kz-35")  # only blocked() (on the worker's loop) turns it half-open


def test_half_open_probes_with_a_delivery_that_failed_newest_first() -> None:
    breaker = CircuitBreaker()
    for delivery_id in (1, 2, 3, 2, 4):  # a repeat counts once; only the last PROBES_KEPT are kept
        breaker.failure("mio-kz-35", BreakerPolicy(failure_threshold=10), now=T, delivery_id=delivery_id)
    assert breaker.probes("mio-kz-35") == (4, 2, 3)
    assert len(breaker.probes("mio-kz-35")) == PROBES_KEPT


def test_a_failed_probe_reopens_at_once() -> None:
    breaker = opened()
    breaker.blocked("mio-kz-35", now=T + 30)  # half-open
    assert breaker.failure("mio-kz-35", POLICY, now=T + 31, delivery_id=3)  # one failure, below the threshold
    assert breaker.state("mio-kz-35", now=T + 31) == "open"
    assert not breaker.is_half_open("mio-kz-35")
    assert breaker.open_until("mio-kz-35") == T + 31 + POLICY.reset_after_s
    assert breaker.opened_at("mio-kz-35") == T  # still the first opening: the alert counts from there


def test_a_success_closes_and_forgets() -> None:
    breaker = opened()
    breaker.blocked("mio-kz-35", now=T + 30)
    breaker.success("mio-kz-35")
    assert breaker.state("mio-kz-35", now=T + 30) == "closed"
    assert breaker.probes("mio-kz-35") == ()
    assert breaker.opened_at("mio-kz-35") is None and breaker.open_until("mio-kz-35") is None
    # counting starts again from zero
    assert not breaker.failure("mio-kz-35", POLICY, now=T + 31)
    assert not breaker.failure("mio-kz-35", POLICY, now=T + 31)


def test_instances_are_independent() -> None:
    breaker = opened("mio-kz-35")
    assert breaker.state("mio-kz-35", now=T) == "open"
    assert breaker.state("mio-kz-71", now=T) == "closed"
    assert not breaker.blocked("mio-kz-71", now=T)
