"""Canonical messages for SLA tests, and the report over them through the events-file path."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.config import ROOT
from gateway.sla.calendar import ALMATY
from gateway.sla.engine import SlaReport, compute_report
from gateway.sla.events import parse_event_lines
from gateway.sla.policy import SlaConfig, load_sla_config

CONFIG: SlaConfig = load_sla_config(ROOT / "gateway" / "mappings")


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def msg(type_: str, case_id: str, at: datetime, *, message_id: str | None = None, **body: Any) -> dict[str, Any]:
    """A canonical message as a dict; occurred_at in Asia/Almaty local time, as the Probation IS sends it."""
    if type_ == "case.registered":
        body.setdefault("region", "KZ-35")
        body.setdefault("person", {"iin": "900101******", "surname": "Ахметова", "given_name": "Айгүл",
                                   "birth_date": "1990-01-01", "sex": "female"})
    return {"message_id": message_id or str(uuid.uuid4()), "type": type_, "case_id": case_id,
            "occurred_at": at.astimezone(ALMATY).isoformat(), "body": body}


def lines(messages: Iterable[dict[str, Any]]) -> list[bytes]:
    """Events-file lines: the message plus the gateway's received_at (here: occurred_at + 1 s)."""
    out = []
    for m in messages:
        received = (datetime.fromisoformat(m["occurred_at"]) + timedelta(seconds=1)).astimezone(UTC)
        out.append(orjson.dumps({**m, "received_at": received.isoformat().replace("+00:00", "Z")}) + b"\n")
    return out


def report(messages: Iterable[dict[str, Any]], as_of: datetime, config: SlaConfig = CONFIG) -> SlaReport:
    return compute_report(events=parse_event_lines(lines(messages)), policy=config.policy,
                          calendar=config.calendar, kinds=config.kinds, as_of=as_of)


def legs(rep: SlaReport, rule: str | None = None) -> list[dict[str, Any]]:
    return [leg for leg in rep.to_dict()["legs"] if rule is None or leg["rule"] == rule]
