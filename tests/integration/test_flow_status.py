"""Following the business flow through status URLs: a risk leads to its referral, the referral to its replies;
a reply that contradicts the referral's state is refused with its own problem type and not forwarded."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import httpx

from gateway.samples import SampleCases
from tests.harness import Stack, wait_for

PROBLEM = "urn:probation-gateway:problem:reply-contradicts-referral"


def _get(stack: Stack, url: str) -> dict:
    assert url.startswith(stack.gateway_url + "/"), url  # absolute, on the gateway's public URL
    r = stack.client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


def _case_and_risk(stack: Stack, seed: int) -> tuple[dict, dict]:
    samples = SampleCases(seed=seed)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    risk = {"message_id": str(uuid.uuid4()), "type": "risk.detected", "case_id": case["case_id"],
            "occurred_at": case["occurred_at"],
            "body": {"risk_id": f"R-{seed}", "domain": "housing", "level": "R3", "trigger": "homeless"}}
    for message in (case, risk):
        r = stack.client.post("/v1/messages", json=message)
        assert r.status_code == 202, r.text
    return case, risk


def _mio_callback(stack: Stack, *, event: str, referral_id: str, case_id: str, **extra: str) -> httpx.Response:
    body = json.dumps({"eventId": str(uuid.uuid4()), "event": event, "referralId": referral_id, "caseRef": case_id,
                       "occurredAt": datetime.now(timezone.utc).isoformat(), **extra}).encode()
    with stack.peer_client("mio-kz-35") as mio:
        return mio.post("/v1/inbound/mio", content=body, headers={"content-type": "application/json"})


def _probation_types(stack: Stack, referral_id: str) -> list[str]:
    got = httpx.get(f"{stack.probation.url}/_sim/received").json()
    return [m["type"] for m in got if m["body"].get("referral_id") == referral_id]


def test_a_risk_leads_to_its_referral_and_the_referral_to_its_completion(stack: Stack) -> None:
    stack.start_gateway()
    case, risk = _case_and_risk(stack, seed=161)
    accepted = stack.client.post("/v1/messages", json=risk).json()  # the same risk again: the same answer
    risk_status = _get(stack, accepted["status_url"])
    assert risk_status["type"] == "risk.detected" and risk_status["caused_by"] is None
    (caused,) = risk_status["caused"]  # the routing matrix's referral, made once
    assert caused["type"] == "referral.requested" and caused["source"] == "routing-matrix"
    assert caused["referral_id"].startswith("RM-") and caused["referral_status"] in ("requested", "accepted",
                                                                                    "completed")

    def completed() -> dict | None:
        status = _get(stack, caused["status_url"])
        return status if status["referral"]["status"] == "completed" else None

    referral = wait_for(completed, timeout=30, what="the referral completed")
    assert referral["caused_by"]["message_id"] == risk["message_id"]
    assert referral["caused_by"]["status_url"] == accepted["status_url"]
    chain = referral["referral"]
    assert (chain["referral_id"], chain["kind"], chain["risk_id"]) == (caused["referral_id"], "shelter.placement",
                                                                       risk["body"]["risk_id"])
    steps = {s["step"]: s for s in chain["steps"]}
    assert set(steps) == {"requested", "delivered", "accepted", "completed"}, chain["steps"]
    assert steps["delivered"]["peer"] == "mio-kz-35" and steps["requested"]["peer"] == "routing-matrix"
    assert steps["requested"]["at"] <= steps["delivered"]["at"]
    assert [r["type"] for r in sorted(referral["replies"], key=lambda r: r["type"])] == [
        "referral.accepted", "referral.completed"]
    assert chain["refused_replies"] == []

    # The completion's own status leads back to the referral, with the same chain.
    completion = _get(stack, steps["completed"]["status_url"])
    assert completion["type"] == "referral.completed" and completion["source"] == "mio"
    assert completion["caused_by"]["message_id"] == caused["message_id"]
    assert completion["referral"]["steps"] == chain["steps"] and completion["replies"] == []
    # The risk now shows where its referral stands.
    assert _get(stack, accepted["status_url"])["caused"][0]["referral_status"] == "completed"


def test_a_contradicting_reply_is_refused_with_its_problem_type_and_not_forwarded(stack: Stack) -> None:
    stack.start_gateway()
    case, risk = _case_and_risk(stack, seed=162)
    other, _ = _case_and_risk(stack, seed=163)
    risk_status = _get(stack, f"{stack.gateway_url}/v1/messages/{risk['message_id']}")
    (caused,) = risk_status["caused"]
    referral_id = caused["referral_id"]
    wait_for(lambda: {"referral.accepted", "referral.completed"} <= set(_probation_types(stack, referral_id)),
             timeout=30, what="the completion forwarded to the Probation IS")

    # A rejection after the completion: refused, its own problem type.
    late = _mio_callback(stack, event="REFERRAL_REJECTED", referral_id=referral_id, case_id=case["case_id"],
                         reason="no beds")
    assert late.status_code == 409, late.text
    assert late.headers["content-type"] == "application/problem+json"
    doc = late.json()
    assert doc["type"] == PROBLEM and "completed" in doc["detail"]
    # A reply naming this referral under another case: refused the same way.
    crossed = _mio_callback(stack, event="REFERRAL_COMPLETED", referral_id=referral_id, case_id=other["case_id"])
    assert crossed.status_code == 409 and crossed.json()["type"] == PROBLEM, crossed.text
    assert "another case" in crossed.json()["detail"]
    # The same rejection sent by the Probation IS itself is refused too.
    own = {"message_id": str(uuid.uuid4()), "type": "referral.rejected", "case_id": case["case_id"],
           "occurred_at": datetime.now(timezone.utc).isoformat(),
           "body": {"referral_id": referral_id, "reason": "withdrawn"}}
    r = stack.client.post("/v1/messages", json=own)
    assert r.status_code == 409 and r.json()["type"] == PROBLEM, r.text
    assert stack.client.get(f"/v1/messages/{own['message_id']}").status_code == 404  # not stored

    status = _get(stack, caused["status_url"])
    chain = status["referral"]
    assert chain["status"] == "completed"
    refused = chain["refused_replies"]
    # the crossed reply is logged under the case it named; the two of this case are shown here
    assert [(x["peer"], x["status_code"], x["problem"]) for x in refused] == [
        ("mio", 409, PROBLEM), ("probation", 409, PROBLEM)], refused
    assert own["message_id"] in {x["message_id"] for x in refused}
    time.sleep(1.0)  # give a wrongly queued delivery time to show up at the receiver
    types = _probation_types(stack, referral_id)
    assert "referral.rejected" not in types and types.count("referral.completed") == 1, types
