"""Retry decisions with tenacity's strategies over persisted attempt state, and a per-instance circuit breaker."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime, timezone

import tenacity
from tenacity import RetryCallState, stop_after_attempt, stop_after_delay, wait_random_exponential

from gateway.mapping import BreakerPolicy, RetryPolicy
from gateway.wire import (
    ConnectFailed,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    NameNotResolved,
    NotSent,
    PeerDisconnected,
    ReadTimeout,
    TlsFailure,
    TransportFailure,
)

PROBES_KEPT = 3  # deliveries that failed, remembered per instance, to probe a half-open breaker with


class DeliveryFailure(Exception):
    """One failed attempt; `retryable` says whether policy may try again."""

    def __init__(self, reason: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """RFC 9110 Retry-After: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


# Reason classes, each the prefix of a failure's reason (before the colon), in the API and the metrics. Nothing
# was sent for the first five; after `disconnected after send` and `read timeout` the request may have arrived.
REASON_CLASSES = ("refused", "dns", "tls", "connect timeout", "connection error", "read timeout",
                  "disconnected after send", "http", "transport error")


def reason_class(reason: str | None) -> str:
    """The class of a stored failure reason (`refused: …` → `refused`; `counterpart answered 503` → `http`)."""
    if not reason:
        return "none"
    head = reason.split(":", 1)[0].strip()
    if head in REASON_CLASSES:
        return head
    return "http" if reason.startswith("counterpart answered") else "other"


_FAILURE_CLASSES: tuple[tuple[type[TransportFailure], str], ...] = (
    (PeerDisconnected, "disconnected after send"), (ConnectionRefused, "refused"), (NameNotResolved, "dns"),
    (TlsFailure, "tls"), (ConnectTimeout, "connect timeout"), (ReadTimeout, "read timeout"),
    (ConnectFailed, "connection error"), (ConnectionLost, "connection error"), (NotSent, "connection error"),
)


def classify_transport_error(exc: Exception) -> DeliveryFailure:
    """A transport failure's reason class (see REASON_CLASSES). All are retried: nothing was sent, or the
    counterpart drops a repeat by message id."""
    for kind, reason in _FAILURE_CLASSES:
        if isinstance(exc, kind):
            return DeliveryFailure(f"{reason}: {str(exc) or type(exc).__name__}", retryable=True)
    return DeliveryFailure(f"transport error: {type(exc).__name__}: {exc}", retryable=False)


def classify_status(status: int, *, policy: RetryPolicy, retry_after: float | None) -> DeliveryFailure:
    if status in policy.retry_statuses:
        return DeliveryFailure(f"counterpart answered {status}", retryable=True, status=status, retry_after=retry_after)
    return DeliveryFailure(f"counterpart answered {status}", retryable=False, status=status)


class wait_retry_after(tenacity.wait.wait_base):
    """The counterpart's Retry-After (clamped) when it gave one, else the fallback strategy."""

    def __init__(self, fallback: tenacity.wait.wait_base, *, clamp: float) -> None:
        self.fallback = fallback
        self.clamp = clamp

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, DeliveryFailure) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.clamp)
        return self.fallback(retry_state)


@dataclass(frozen=True)
class Decision:
    retry_in: float | None  # seconds until the next attempt; None means dead letter
    reason: str


class RetryDecider:
    """Evaluates tenacity's stop/wait strategies against the attempt state kept in the store."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.wait = wait_retry_after(
            wait_random_exponential(multiplier=policy.base_delay_s, max=policy.max_delay_s),
            clamp=policy.retry_after_max_s,
        )
        self.stop = stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.deadline_s)

    def decide(self, failure: DeliveryFailure, *, attempt: int, first_attempt_at: datetime, now: datetime) -> Decision:
        if not failure.retryable:
            return Decision(None, failure.reason)
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        state.set_exception((type(failure), failure, None))
        # Elapsed time comes from the store, so a restarted process keeps counting from the first attempt.
        state.start_time = state.outcome_timestamp - (now - first_attempt_at).total_seconds()  # type: ignore[operator]
        if self.stop(state):
            if attempt >= self.policy.max_attempts:
                return Decision(None, f"{failure.reason}; gave up after {attempt} attempts")
            return Decision(None, f"{failure.reason}; delivery deadline of {self.policy.deadline_s:.0f} s passed")
        delay = self.wait(state)
        elapsed = (now - first_attempt_at).total_seconds()
        if elapsed + delay > self.policy.deadline_s:
            return Decision(None, f"{failure.reason}; next attempt would fall after the delivery deadline")
        return Decision(delay, failure.reason)


class CircuitBreaker:
    """Per-instance breaker: a counterpart that keeps failing is left alone for a while, others go on."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        self._half_open: set[str] = set()
        self._failed: dict[str, list[int]] = {}  # newest last: the deliveries a half-open breaker probes with
        self._opened_at: dict[str, float] = {}  # first opening since the last success (failed probes reopen it)

    def is_open(self, instance: str, *, now: float) -> bool:
        """Open and still pausing (no side effect, unlike blocked())."""
        until = self._open_until.get(instance)
        return until is not None and now < until

    def probes(self, instance: str) -> tuple[int, ...]:
        """Deliveries that failed lately, newest first: a probe with one of them tests the fault that opened the
        breaker; a never-tried one would fail on a fault that hits first attempts and reopen it."""
        return tuple(reversed(self._failed.get(instance, ())))

    def blocked(self, instance: str, *, now: float) -> bool:
        until = self._open_until.get(instance)
        if until is None:
            return False
        if now >= until:
            self._half_open.add(instance)
            return False
        return True

    def open_until(self, instance: str) -> float | None:
        """The monotonic time an open breaker lets a probe through (None: not open)."""
        return self._open_until.get(instance)

    def is_half_open(self, instance: str) -> bool:
        return instance in self._half_open

    def opened_at(self, instance: str) -> float | None:
        """The monotonic time the breaker opened and has not closed since (None: closed)."""
        return self._opened_at.get(instance)

    def state(self, instance: str, *, now: float) -> str:
        if self.blocked(instance, now=now):
            return "open"
        return "half_open" if instance in self._half_open else "closed"

    def success(self, instance: str) -> None:
        self._failures.pop(instance, None)
        self._open_until.pop(instance, None)
        self._half_open.discard(instance)
        self._failed.pop(instance, None)
        self._opened_at.pop(instance, None)

    def failure(self, instance: str, policy: BreakerPolicy, *, now: float, delivery_id: int | None = None) -> bool:
        """Count a failure; True when this failure opened the breaker."""
        if delivery_id is not None:
            kept = [d for d in self._failed.get(instance, ()) if d != delivery_id]
            self._failed[instance] = (kept + [delivery_id])[-PROBES_KEPT:]
        count = self._failures.get(instance, 0) + 1
        self._failures[instance] = count
        if instance in self._half_open or count >= policy.failure_threshold:
            self._half_open.discard(instance)
            self._open_until[instance] = now + policy.reset_after_s
            self._opened_at.setdefault(instance, now)
            self._failures[instance] = 0
            return True
        return False
