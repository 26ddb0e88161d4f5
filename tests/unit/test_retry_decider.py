"""RetryDecider over persisted attempt state, and the classification of every way a send can fail."""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest

from gateway import wire
from gateway.mapping import RetryPolicy
from gateway.pipeline.retry import (
    REASON_CLASSES,
    DeliveryFailure,
    RetryDecider,
    classify_status,
    classify_transport_error,
    parse_retry_after,
    reason_class,
)
from tests.fakes import T0

POLICY = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=10.0, deadline_s=3600.0, retry_after_max_s=30.0)
DECIDER = RetryDecider(POLICY)
RETRYABLE = DeliveryFailure("counterpart answered 503", retryable=True, status=503)


def decide(failure: DeliveryFailure, *, attempt: int, elapsed_s: float = 0.0):  # noqa: ANN201
    return DECIDER.decide(failure, attempt=attempt, first_attempt_at=T0, now=T0 + timedelta(seconds=elapsed_s))


def test_a_non_retryable_failure_is_dead_at_once() -> None:
    failure = DeliveryFailure("counterpart answered 400", retryable=False, status=400)
    decision = decide(failure, attempt=1)
    assert decision.retry_in is None
    assert decision.reason == "counterpart answered 400"


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_a_retryable_failure_within_its_attempts_waits_within_the_policy(attempt: int) -> None:
    bound = min(POLICY.max_delay_s, POLICY.base_delay_s * 2 ** (attempt - 1))
    delays = [decide(RETRYABLE, attempt=attempt, elapsed_s=5.0) for _ in range(50)]
    assert all(d.reason == RETRYABLE.reason for d in delays)
    assert all(d.retry_in is not None and 0.0 <= d.retry_in <= bound for d in delays)


def test_the_delay_never_exceeds_max_delay() -> None:
    many = RetryDecider(POLICY.model_copy(update={"max_attempts": 50}))
    far = [many.decide(RETRYABLE, attempt=30, first_attempt_at=T0, now=T0).retry_in for _ in range(50)]
    assert all(d is not None and 0.0 <= d <= POLICY.max_delay_s for d in far)


def test_at_max_attempts_it_gives_up() -> None:
    decision = decide(RETRYABLE, attempt=POLICY.max_attempts, elapsed_s=10.0)
    assert decision.retry_in is None
    assert decision.reason == "counterpart answered 503; gave up after 5 attempts"


def test_past_the_deadline_it_gives_up() -> None:
    decision = decide(RETRYABLE, attempt=2, elapsed_s=POLICY.deadline_s + 1)
    assert decision.retry_in is None
    assert decision.reason == "counterpart answered 503; delivery deadline of 3600 s passed"


def test_a_next_attempt_after_the_deadline_is_not_scheduled() -> None:
    failure = DeliveryFailure("counterpart answered 503", retryable=True, status=503, retry_after=20.0)
    decision = decide(failure, attempt=2, elapsed_s=POLICY.deadline_s - 10)
    assert decision.retry_in is None
    assert decision.reason == "counterpart answered 503; next attempt would fall after the delivery deadline"


@pytest.mark.parametrize(("retry_after", "expected"), [(7.0, 7.0), (0.0, 0.0), (1000.0, 30.0), (-5.0, 0.0)])
def test_retry_after_is_honoured_and_clamped(retry_after: float, expected: float) -> None:
    failure = DeliveryFailure("counterpart answered 429", retryable=True, status=429, retry_after=retry_after)
    assert decide(failure, attempt=1).retry_in == expected


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120", now=T0) == 120.0
    assert parse_retry_after("Mon, 02 Mar 2026 09:01:30 GMT", now=T0) == 90.0
    assert parse_retry_after("Mon, 02 Mar 2026 08:00:00 GMT", now=T0) == 0.0  # in the past: at once
    assert parse_retry_after("soon", now=T0) is None
    assert parse_retry_after(None, now=T0) is None


@pytest.mark.parametrize("status", POLICY.retry_statuses)
def test_retryable_statuses_keep_their_retry_after(status: int) -> None:
    failure = classify_status(status, policy=POLICY, retry_after=12.0)
    assert (failure.retryable, failure.status, failure.retry_after) == (True, status, 12.0)
    assert failure.reason == f"counterpart answered {status}"
    assert reason_class(failure.reason) == "http"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_other_statuses_are_final(status: int) -> None:
    failure = classify_status(status, policy=POLICY, retry_after=12.0)
    assert (failure.retryable, failure.status, failure.retry_after) == (False, status, None)
    assert reason_class(failure.reason) == "http"


TRANSPORT_FAILURES = {
    wire.ConnectionRefused: ("refused", True),
    wire.NameNotResolved: ("dns", True),
    wire.TlsFailure: ("tls", True),
    wire.ConnectTimeout: ("connect timeout", True),
    wire.ConnectFailed: ("connection error", True),
    wire.PeerDisconnected: ("disconnected after send", True),
    wire.ReadTimeout: ("read timeout", True),
    wire.ConnectionLost: ("connection error", True),
    wire.TransportBroken: ("transport error", False),
}


@pytest.mark.parametrize(("kind", "expected"), list(TRANSPORT_FAILURES.items()),
                         ids=[k.__name__ for k in TRANSPORT_FAILURES])
def test_each_transport_failure_has_its_reason_class(kind: type[wire.TransportFailure],
                                                     expected: tuple[str, bool]) -> None:
    prefix, retryable = expected
    failure = classify_transport_error(kind("boom"))
    assert failure.reason.startswith(f"{prefix}: ")
    assert "boom" in failure.reason
    assert failure.retryable is retryable
    assert reason_class(failure.reason) == prefix
    assert prefix in REASON_CLASSES


def test_every_concrete_transport_failure_of_the_wire_module_is_classified() -> None:
    concrete = {cls for _, cls in inspect.getmembers(wire, inspect.isclass)
                if issubclass(cls, wire.TransportFailure) and cls not in (wire.TransportFailure, wire.NotSent)}
    assert concrete == set(TRANSPORT_FAILURES)


def test_a_failure_without_text_is_named_by_its_type() -> None:
    assert classify_transport_error(wire.ReadTimeout()).reason == "read timeout: ReadTimeout"


def test_reason_class_of_unknown_and_missing_reasons() -> None:
    assert reason_class(None) == "none"
    assert reason_class("instance x is not configured or disabled") == "other"
