"""A message's overall status and hop timeline, read from the store, and where it sits in the business flow:
the message that caused it, the messages it caused, and for a referral its chain of replies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

from gateway.canonical.errors import NotFound
from gateway.pipeline.referrals import ReplyContradictsReferral, refused_hop_error
from gateway.storage.status_queries import message_links
from gateway.storage.store import Store

StatusUrl = Callable[[str], str]
PROBLEM_BASE = "urn:probation-gateway:problem:"  # as gateway.api.problems writes it


class DeliveryView(BaseModel):
    id: int
    counterpart: str
    instance: str | None
    state: Literal["pending", "in_flight", "delivered", "dead", "parked"]
    attempts: int
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status: int | None
    reason: str | None


class HopView(BaseModel):
    hop: Literal["received", "reply", "derived", "attempt"]
    peer: str
    attempt: int | None
    request_in_at: datetime | None
    request_out_at: datetime | None
    response_in_at: datetime | None
    response_out_at: datetime | None
    request_bytes: int | None
    response_bytes: int | None
    status_code: int | None
    result: str
    error: str | None


class LinkedMessage(BaseModel):
    """Another message of the same flow, with the absolute URL of its own status."""

    message_id: str
    type: str
    case_id: str
    occurred_at: datetime
    received_at: datetime
    source: str
    status_url: str
    referral_id: str | None = Field(None, description="for a referral request: the referral it made")
    referral_status: Literal["requested", "accepted", "completed", "rejected"] | None = Field(
        None, description="for a referral request: where that referral stands now")


class ReferralStep(BaseModel):
    """One step of a referral, in order of arrival at the gateway."""

    step: Literal["requested", "delivered", "accepted", "completed", "rejected"]
    at: datetime
    peer: str = Field(description="who took the step: the sender of the request or reply, the instance delivered to")
    message_id: str = Field(description="the message of the step (delivered: the referral request)")
    status_url: str


class RefusedReply(BaseModel):
    """A reply that contradicted the referral's state: refused, kept as a refused hop, never forwarded."""

    message_id: str
    at: datetime
    peer: str
    status_code: int
    problem: str


class ReferralChain(BaseModel):
    referral_id: str
    kind: str
    risk_id: str | None
    status: Literal["requested", "accepted", "completed", "rejected"] = Field(
        description="the referral's state: a late acceptance after the completion does not move it back")
    updated_at: datetime
    steps: list[ReferralStep]
    refused_replies: list[RefusedReply]


class MessageStatus(BaseModel):
    message_id: str
    type: str
    case_id: str
    occurred_at: datetime
    received_at: datetime
    source: str
    status: Literal["stored", "queued", "delivering", "retrying", "delivered", "parked", "dead_letter"]
    deliveries: list[DeliveryView]
    timeline: list[HopView]
    caused_by: LinkedMessage | None = Field(
        None, description="what this message follows from: the risk a referral was made for, the referral request "
                          "a reply answers")
    caused: list[LinkedMessage] = Field(
        default_factory=list, description="messages this one caused: a risk's referrals (routing matrix or not)")
    replies: list[LinkedMessage] = Field(
        default_factory=list, description="a referral request's replies (accepted, completed, rejected) as stored")
    referral: ReferralChain | None = Field(
        None, description="for a referral request or a reply: the referral from request to its last reply")


def overall(states: list[str], attempts: list[int]) -> str:
    if not states:
        return "stored"
    if "dead" in states:
        return "dead_letter"
    if "parked" in states:
        return "parked"
    if all(s == "delivered" for s in states):
        return "delivered"
    if any(s == "pending" and a > 0 for s, a in zip(states, attempts)):
        return "retrying"
    return "delivering" if "in_flight" in states else "queued"


def _relative(message_id: str) -> str:
    return f"/v1/messages/{message_id}"


async def message_status(*, store: Store, message_id: str, status_url: StatusUrl = _relative) -> MessageStatus:
    """`status_url` makes a message's status URL (the gateway's: absolute, from GATEWAY_PUBLIC_URL)."""
    found = await store.message_status(message_id)
    if found is None:
        raise NotFound(f"no message {message_id}")
    dels = found["deliveries"]
    msg = found["message"]
    links = await message_links(store.engines, message_id=msg["message_id"], type=msg["type"],
                                case_id=msg["case_id"], refused_error=refused_hop_error)
    chain = links["referral"]

    def link(row: dict[str, Any] | None) -> LinkedMessage | None:
        return None if row is None else LinkedMessage(**row, status_url=status_url(row["message_id"]))

    return MessageStatus(
        **msg,
        status=overall([d["state"] for d in dels], [d["attempts"] for d in dels]),
        deliveries=dels,
        timeline=found["hops"],
        caused_by=link(links["caused_by"]),
        caused=[link(r) for r in links["caused"]],
        replies=[link(r) for r in chain["replies"]] if chain and msg["type"] == "referral.requested" else [],
        referral=_chain(chain, status_url) if chain else None,
    )


def _chain(row: dict[str, Any], status_url: StatusUrl) -> ReferralChain:
    steps: list[ReferralStep] = []
    request = row["request"]
    if request is not None:
        steps.append(ReferralStep(step="requested", at=request["received_at"], peer=request["source"],
                                  message_id=request["message_id"], status_url=status_url(request["message_id"])))
        for d in row["deliveries"]:
            if d["state"] == "delivered" and d["finished_at"] is not None:
                steps.append(ReferralStep(step="delivered", at=d["finished_at"], peer=d["instance"] or d["counterpart"],
                                          message_id=request["message_id"],
                                          status_url=status_url(request["message_id"])))
    for reply in row["replies"]:
        steps.append(ReferralStep(step=reply["type"].split(".", 1)[1], at=reply["received_at"], peer=reply["source"],
                                  message_id=reply["message_id"], status_url=status_url(reply["message_id"])))
    order = {"requested": 0, "delivered": 1, "accepted": 2, "completed": 3, "rejected": 3}
    steps.sort(key=lambda s: (s.at, order[s.step]))
    return ReferralChain(
        referral_id=row["referral_id"], kind=row["kind"], risk_id=row["risk_id"], status=row["status"],
        updated_at=row["updated_at"], steps=steps,
        refused_replies=[RefusedReply(**r, problem=PROBLEM_BASE + ReplyContradictsReferral.slug)
                         for r in row["refused"]],
    )


class DeliveryItem(DeliveryView):
    message_id: str
    case_id: str
    type: str
    created_at: datetime


class DeliveryList(BaseModel):
    items: list[DeliveryItem]
    next: int | None


async def list_deliveries(
    *, store: Store, state: str | None, counterpart: str | None, instance: str | None, after: int, limit: int
) -> DeliveryList:
    rows = await store.list_deliveries(state=state, counterpart=counterpart, instance=instance, after=after,
                                       limit=limit)
    return DeliveryList(items=rows, next=rows[-1]["id"] if len(rows) == limit else None)
