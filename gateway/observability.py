"""Prometheus metrics and structured JSON logs (which never carry an IIN or a name)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Endpoints of administrators and auditors (people), whose refusals say something else than a refused message.
OPERATOR_PATHS = ("/v1/admin", "/v1/audit", "/v1/deliveries", "/console")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """One registry per gateway instance, so several apps in one process don't collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("gateway_messages_accepted", "Messages accepted", ["type", "source"], registry=r)
        self.duplicates = Counter("gateway_messages_duplicate", "Re-sent messages answered from the store",
                                  ["source"], registry=r)
        self.refused = Counter("gateway_messages_refused", "Requests refused with a problem (operators' requests "
                               "are gateway_operator_requests_refused)", ["problem"], registry=r)
        self.operator_refused = Counter("gateway_operator_requests_refused", "Refused requests to the admin, audit "
                                        "and console endpoints", ["problem"], registry=r)
        self.delivered = Counter("gateway_deliveries_delivered", "Deliveries completed",
                                 ["counterpart", "counterpart_instance"], registry=r)
        self.retried = Counter("gateway_deliveries_retried", "Attempts that will be retried",
                               ["counterpart", "counterpart_instance"], registry=r)
        self.dead = Counter("gateway_deliveries_dead_lettered", "Deliveries dead-lettered",
                            ["counterpart", "counterpart_instance"], registry=r)
        self.attempt_failures = Counter("gateway_attempt_failures", "Failed delivery attempts by reason class "
                                        "(gateway.pipeline.retry.REASON_CLASSES)",
                                        ["counterpart", "counterpart_instance", "reason_class"], registry=r)
        self.attempt_latency = Histogram("gateway_attempt_seconds", "Time from sending to the counterpart's answer",
                                         ["counterpart", "counterpart_instance"], buckets=_LATENCY_BUCKETS, registry=r)
        self.breaker_open = Gauge("gateway_circuit_open", "1 while an instance's circuit breaker is open",
                                  ["counterpart_instance"], registry=r)
        self.in_flight = Gauge("gateway_deliveries_in_flight", "Deliveries being attempted by this process",
                               registry=r)
        self.document_requests = Counter("gateway_document_requests", "Document requests by how they were served "
                                         "(hit: a valid stored copy; miss: a new upstream call; coalesced: joined "
                                         "one in flight)", ["record_kind", "outcome"], registry=r)
        self.document_upstream = Counter("gateway_document_upstream_calls", "Upstream record lookups, each attempt",
                                         ["record_kind", "counterpart_instance", "result"], registry=r)
        self.document_waiters = Counter("gateway_document_coalesced_waiters",
                                        "Requests that waited on another request's upstream call", ["record_kind"],
                                        registry=r)
        self.alerts = Gauge("gateway_alerts", "Open alerts the gateway raised about itself, by rule and state "
                            "(firing, acknowledged); set by the process holding the alert monitor's lease",
                            ["rule", "state"], registry=r)
        self.alert_emails = Counter("gateway_alert_emails", "Alert e-mail attempts by outcome (sent, retry, dead)",
                                    ["result"], registry=r)
        self.document_hit_ratio = Gauge("gateway_document_hit_ratio",
                                        "Share of this process's document requests served from a stored copy",
                                        registry=r)

    def count_refusal(self, *, path: str, problem: str) -> None:
        """The one place a refusal is counted: an operator's request apart from a message or a callback."""
        counter = self.operator_refused if path.startswith(OPERATOR_PATHS) else self.refused
        counter.labels(problem).inc()

    def watch_loops(self, loops: Callable[[], Iterable[Any]]) -> None:
        """Export the background loops' state at each scrape (gateway.loops.Loop: name, healthy, last_success)."""
        self.registry.register(_LoopCollector(loops))


class _LoopCollector:
    def __init__(self, loops: Callable[[], Iterable[Any]]) -> None:
        self._loops = loops

    def describe(self) -> list:
        return []  # values are read at collect time; nothing to check at registration

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("gateway_loop_up", "1 while a background loop runs and its last step succeeded",
                               labels=["loop"])
        last = GaugeMetricFamily("gateway_loop_last_success_timestamp_seconds",
                                 "Unix time of a background loop's last successful step", labels=["loop"])
        failures = CounterMetricFamily("gateway_loop_failures", "Failed steps of a background loop",
                                       labels=["loop"])
        for loop in self._loops():
            up.add_metric([loop.name], 1.0 if loop.healthy else 0.0)
            if loop.last_success is not None:
                last.add_metric([loop.name], loop.last_success)
            failures.add_metric([loop.name], loop.total_failures)
        yield from (up, last, failures)


# Twelve digits in a row look like an IIN: mask them even if a message slips into a log line.
_IIN_LIKE = re.compile(r"(?<!\d)(\d{4})\d{6}(\d{2})(?!\d)")


class JsonFormatter(logging.Formatter):
    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _IIN_LIKE.sub(r"\1******\2", json.dumps(entry, ensure_ascii=False, default=str))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One line per request at INFO is noise on a busy gateway; metrics count requests.
    logging.getLogger("uvicorn.access").setLevel(max(logging.WARNING, root.level))
    # Driver and ORM debug output prints SQL parameters, which can carry personal data.
    for name in ("aiosqlite", "asyncpg", "sqlalchemy", "httpx", "httpcore", "aiohttp"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
