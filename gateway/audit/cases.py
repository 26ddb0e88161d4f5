"""One case as an auditor follows it: each referral's chain, every message with its hops, SLA legs, documents."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from gateway.canonical.errors import NotFound
from gateway.sla.live import live_case_report
from gateway.sla.policy import SlaConfig
from gateway.storage.store import Store

# Body fields a case view may show: identifiers and classifications, never the person or free text.
_SHOWN = ("referral_id", "risk_id", "kind", "domain", "level", "trigger", "region", "record_kind", "status", "rule",
          "deadline_at")
_REPLIES = {"referral.accepted": "accepted", "referral.completed": "completed", "referral.rejected": "rejected"}


@dataclass
class ReferralChain:
    """requested → delivered → accepted → completed or rejected, each step with its time (None: not yet)."""

    referral_id: str
    kind: str
    status: str
    counterpart: str | None = None
    instance: str | None = None
    requested_at: datetime | None = None
    delivered_at: datetime | None = None
    attempts: int = 0
    delivery_state: str | None = None
    accepted_at: datetime | None = None
    completed_at: datetime | None = None
    rejected_at: datetime | None = None

    @property
    def outcome(self) -> str:
        if self.completed_at is not None:
            return "completed"
        if self.rejected_at is not None:
            return "rejected"
        if self.accepted_at is not None:
            return "accepted"
        if self.delivered_at is not None:
            return "delivered"
        return "requested"


@dataclass
class TimelineEntry:
    message_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    source: str
    fields: dict[str, Any]
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    hops: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CaseView:
    case_id: str
    as_of: datetime
    region: str | None
    referrals: list[ReferralChain]
    timeline: list[TimelineEntry]
    legs: list[dict[str, Any]]
    escalations: list[TimelineEntry]
    documents: list[dict[str, Any]]


async def case_view(*, store: Store, config: SlaConfig, case_id: str, as_of: datetime) -> CaseView:
    """The case as stored, with its legs from the same engine as `GET /v1/sla/cases/{case_id}`."""
    found = await store.case_activity(case_id)
    if not found["messages"] and not found["documents"]:
        raise NotFound(f"no case {case_id}")
    deliveries_of: dict[str, list[dict[str, Any]]] = {}
    for d in found["deliveries"]:
        deliveries_of.setdefault(d["message_id"], []).append(d)
    hops_of: dict[str, list[dict[str, Any]]] = {}
    for h in found["hops"]:
        start = h["request_out_at"] or h["request_in_at"]  # an attempt: sent → answered; a receipt: in → out
        end = h["response_in_at"] or h["response_out_at"]
        h["duration_ms"] = (end - start).total_seconds() * 1000 if start and end else None
        hops_of.setdefault(h["message_id"], []).append(h)

    timeline: list[TimelineEntry] = []
    region = None
    for m in found["messages"]:
        body = orjson.loads(m["content"]).get("body", {})
        region = region or body.get("region")
        timeline.append(TimelineEntry(
            message_id=m["message_id"], type=m["type"], occurred_at=m["occurred_at"], received_at=m["received_at"],
            source=m["source"], fields={k: body[k] for k in _SHOWN if body.get(k) is not None},
            deliveries=deliveries_of.get(m["message_id"], []), hops=hops_of.get(m["message_id"], [])))

    chains = {r["referral_id"]: ReferralChain(r["referral_id"], r["kind"], r["status"]) for r in found["referrals"]}
    for entry in timeline:
        chain = chains.get(entry.fields.get("referral_id", ""))
        if chain is None:
            continue
        if entry.type == "referral.requested":
            chain.requested_at = entry.received_at
            outbound = [d for d in entry.deliveries if d["counterpart"] != "probation"]
            if outbound:
                d = outbound[0]
                chain.counterpart, chain.instance = d["counterpart"], d["instance"]
                chain.attempts, chain.delivery_state = d["attempts"], d["state"]
                chain.delivered_at = d["finished_at"] if d["state"] == "delivered" else None
        elif entry.type in _REPLIES:
            setattr(chain, f"{_REPLIES[entry.type]}_at", entry.occurred_at)

    report = await live_case_report(store=store, config=config, case_id=case_id, as_of=as_of)
    legs = report.to_dict()["legs"]  # the API's own rendering: RFC 3339 times, elapsed_seconds
    return CaseView(case_id=case_id, as_of=as_of.astimezone(timezone.utc), region=region,
                    referrals=list(chains.values()), timeline=timeline, legs=legs,
                    escalations=[e for e in timeline if e.type == "escalation.raised"],
                    documents=found["documents"])
