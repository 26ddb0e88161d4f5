"""A referral crosses the gateway over real HTTP: delivered, retried by policy, dead-lettered, called back."""

from __future__ import annotations

import statistics

import httpx

from gateway.samples import SampleCases
from tests.harness import Stack, sim_config, sim_stats, wait_for, write_counterparts


def _register_and_refer(stack: Stack, samples: SampleCases, *, region: str = "KZ-35") -> tuple[dict, dict]:
    while True:
        case = samples.case()[0]
        if case["body"]["region"] == region:
            break
    referral = samples.shelter_referral(case["case_id"])
    for message in (case, referral):
        r = stack.client.post(f"/v1/messages", json=message)
        assert r.status_code == 202, r.text
    return case, referral


def _status(stack: Stack, message_id: str) -> dict:
    r = stack.client.get(f"/v1/messages/{message_id}")
    assert r.status_code == 200, r.text
    return r.json()


def test_referral_delivered_called_back_and_reported_to_probation(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=1)
    case, referral = _register_and_refer(stack, samples)

    done = wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered" and
                    _status(stack, referral["message_id"]), what="referral delivered")
    assert done["deliveries"][0]["instance"] == "mio-kz-35"
    hops = [h["hop"] for h in done["timeline"]]
    assert hops == ["received", "attempt"]
    attempt = done["timeline"][1]
    assert attempt["status_code"] == 201 and attempt["request_out_at"] <= attempt["response_in_at"]

    # МИО accepted synchronously, then called back `REFERRAL_COMPLETED`; both reach the Probation IS.
    def probation_got() -> list[dict]:
        got = httpx.get(f"{stack.probation.url}/_sim/received").json()
        types = {m["type"] for m in got if m["body"].get("referral_id") == referral["body"]["referral_id"]}
        return got if {"referral.accepted", "referral.completed"} <= types else []

    got = wait_for(probation_got, what="replies at the Probation IS")
    completed = next(m for m in got if m["type"] == "referral.completed")
    assert completed["case_id"] == case["case_id"]
    mio_received = httpx.get(f"{stack.mio.url}/_sim/received").json()
    assert [m["requestId"] for m in mio_received] == [referral["message_id"]]
    # case.registered goes nowhere: it is stored, not delivered.
    assert _status(stack, case["message_id"])["status"] == "stored"


def test_503_three_times_then_200_is_delivered_once_with_growing_delays(stack: Stack) -> None:
    stack.retry.update(base_delay_s=0.2, max_delay_s=5, max_attempts=6)
    write_counterparts(stack.counterparts, [
        {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url},
        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": stack.mio.url,
         "retry": stack.retry, "breaker": {"failure_threshold": 1000}},
    ])
    sim_config(stack.mio, per_message=[503, 503, 503], callbacks=False)
    stack.start_gateway()
    samples = SampleCases(seed=2)
    referrals = [_register_and_refer(stack, samples)[1] for _ in range(20)]

    wait_for(lambda: all(_status(stack, r["message_id"])["status"] == "delivered" for r in referrals),
             timeout=60, what="all delivered")
    stats = sim_stats(stack.mio)
    assert stats["unique_messages"] == 20 and stats["processed_twice"] == []
    gaps: list[list[float]] = []
    for r in referrals:
        times = stats["attempts"][r["message_id"]]
        assert len(times) == 4  # three 503s, then the 200
        gaps.append([b - a for a, b in zip(times, times[1:])])
        status = _status(stack, r["message_id"])
        assert [h["status_code"] for h in status["timeline"] if h["hop"] == "attempt"] == [503, 503, 503, 201]
        # Full jitter: each wait is drawn from [0, base * 2^(n-1)] (plus processing time).
        for n, gap in enumerate(gaps[-1], start=1):
            assert gap <= 0.2 * 2 ** (n - 1) + 1.0  # scheduling slack on a shared 2-core machine
    means = [statistics.mean(g[i] for g in gaps) for i in range(3)]
    assert means[0] < means[1] < means[2], means


def test_400_is_dead_lettered_at_once(stack: Stack) -> None:
    sim_config(stack.mio, per_message=[400], callbacks=False)
    stack.start_gateway()
    _, referral = _register_and_refer(stack, SampleCases(seed=3))
    status = wait_for(lambda: (s := _status(stack, referral["message_id"]))["status"] == "dead_letter" and s,
                      what="dead letter")
    delivery = status["deliveries"][0]
    assert delivery["state"] == "dead" and delivery["attempts"] == 1 and delivery["last_status"] == 400
    assert "400" in delivery["reason"]
    assert len(sim_stats(stack.mio)["attempts"][referral["message_id"]]) == 1


def test_retry_after_is_honoured(stack: Stack) -> None:
    sim_config(stack.mio, per_message=[503], retry_after="2", callbacks=False)
    stack.start_gateway()
    _, referral = _register_and_refer(stack, SampleCases(seed=4))
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered", timeout=30,
             what="delivered after Retry-After")
    first, second = sim_stats(stack.mio)["attempts"][referral["message_id"]]
    assert second - first >= 2.0


def test_referral_for_unknown_region_is_parked_then_routed_when_the_case_arrives(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=5)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    referral = samples.shelter_referral(case["case_id"])
    assert stack.client.post(f"/v1/messages", json=referral).status_code == 202
    parked = wait_for(lambda: (s := _status(stack, referral["message_id"]))["status"] == "parked" and s)
    assert "not registered yet" in parked["deliveries"][0]["reason"]
    assert stack.client.post(f"/v1/messages", json=case).status_code == 202
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered", what="unparked")


def test_risk_detected_creates_the_matrix_referrals_linked_by_risk_id(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=6)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    risk = {
        "message_id": "5d1c2f7e-4c8a-4d55-9a59-0c8a7f4f1a01", "type": "risk.detected", "case_id": case["case_id"],
        "occurred_at": case["occurred_at"],
        "body": {"risk_id": "R-9", "domain": "housing", "level": "R3", "trigger": "homeless"},
    }
    for message in (case, risk, risk):  # the risk twice: the matrix must not create a second referral
        assert stack.client.post(f"/v1/messages", json=message).status_code == 202

    def probation_types() -> dict[str, dict]:
        got = httpx.get(f"{stack.probation.url}/_sim/received").json()
        by_type = {m["type"]: m for m in got if m["body"].get("risk_id") == "R-9" or m["type"] != "referral.requested"}
        return by_type if {"referral.requested", "referral.accepted", "referral.completed"} <= set(by_type) else {}

    got = wait_for(probation_types, what="matrix referral, its acceptance and completion at the Probation IS")
    referral = got["referral.requested"]
    assert referral["body"]["kind"] == "shelter.placement" and referral["body"]["risk_id"] == "R-9"
    assert got["referral.completed"]["body"]["referral_id"] == referral["body"]["referral_id"]
    mio = httpx.get(f"{stack.mio.url}/_sim/received").json()
    assert [m["referralId"] for m in mio] == [referral["body"]["referral_id"]]
    assert mio[0]["riskRef"] == "R-9"
    assert _status(stack, referral["message_id"])["timeline"][0]["hop"] == "derived"


def test_risk_without_a_matrix_rule_creates_no_referral(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=7)
    case = samples.case()[0]
    risk = {
        "message_id": "7a0e4b8c-1f2d-4e3a-8b9c-0d1e2f3a4b5c", "type": "risk.detected", "case_id": case["case_id"],
        "occurred_at": case["occurred_at"],
        "body": {"risk_id": "R-10", "domain": "housing", "level": "R1", "trigger": "homeless"},
    }
    for message in (case, risk):
        assert stack.client.post(f"/v1/messages", json=message).status_code == 202
    status = _status(stack, risk["message_id"])
    assert status["status"] == "stored" and status["deliveries"] == []


def test_transport_faults_are_retried_until_delivered_once(stack: Stack) -> None:
    write_counterparts(stack.counterparts, [
        {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url},
        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": stack.mio.url,
         "retry": stack.retry, "timeout_s": 0.5, "breaker": {"failure_threshold": 1000}},
    ])
    stack.start_gateway()
    samples = SampleCases(seed=8)
    faults = [{"reset_count": 1}, {"timeout_count": 1}, {"storm_count": 2, "storm_status": 502},
              {"slow_body_ms": 200}]
    for fault in faults:
        httpx.post(f"{stack.mio.url}/_sim/reset").raise_for_status()
        sim_config(stack.mio, callbacks=False, **fault)
        _, referral = _register_and_refer(stack, samples)
        status = wait_for(lambda: (s := _status(stack, referral["message_id"]))["status"] == "delivered" and s,
                          timeout=30, what=f"delivered despite {fault}")
        attempts = [h for h in status["timeline"] if h["hop"] == "attempt"]
        expected = 1 if "slow_body_ms" in fault else 1 + max(fault.get("reset_count", 0),
                                                             fault.get("timeout_count", 0), fault.get("storm_count", 0))
        assert len(attempts) == expected, (fault, attempts)
        assert attempts[-1]["status_code"] == 201
        stats = sim_stats(stack.mio)
        assert stats["unique_messages"] == 1 and stats["processed_twice"] == [], (fault, stats)


def test_region_without_instance_is_parked_and_listed_for_administrators(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=9)
    case = samples.case()[0]
    case["body"]["region"] = "KZ-10"  # Abai region: no МИО instance configured in this stack
    referral = samples.shelter_referral(case["case_id"])
    for message in (case, referral):
        assert stack.client.post(f"/v1/messages", json=message).status_code == 202
    listed = stack.admin.get(f"/v1/deliveries", params={"state": "parked"}).json()
    (item,) = [i for i in listed["items"] if i["message_id"] == referral["message_id"]]
    assert item["counterpart"] == "mio" and item["instance"] is None
    assert item["reason"] == "no mio service instance serves region KZ-10"
    assert _status(stack, referral["message_id"])["status"] == "parked"
    assert stack.admin.get(f"/v1/deliveries", params={"state": "bogus"}).status_code == 422


def test_escalation_goes_to_the_regional_leadership_and_the_probation_is(stack: Stack) -> None:
    from adapters.mio.simulator import create_app as mio_app
    from tests.harness import ThreadServer

    leadership = ThreadServer(mio_app(name="mio-kz-35-leadership",
                                    signer=stack.sim_signer("mio-kz-35-leadership"))).start()
    stack.servers.append(leadership)
    write_counterparts(stack.counterparts, [
        {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url},
        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": stack.mio.url},
        {"name": "mio-kz-35-leadership", "counterpart": "mio", "role": "leadership", "regions": ["KZ-35"],
         "base_url": leadership.url},
    ])
    stack.start_gateway()
    samples = SampleCases(seed=10)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    escalation = {
        "message_id": "9b2e4f6a-8c0d-4e1f-a3b5-c7d9e1f3a5b7", "type": "escalation.raised", "case_id": case["case_id"],
        "occurred_at": case["occurred_at"],
        "body": {"rule": "housing.placement", "deadline_at": case["occurred_at"], "reason": "48 h passed"},
    }
    for message in (case, escalation):
        assert stack.client.post(f"/v1/messages", json=message).status_code == 202
    status = wait_for(lambda: (s := _status(stack, escalation["message_id"]))["status"] == "delivered" and s)
    assert sorted(d["instance"] for d in status["deliveries"]) == ["mio-kz-35-leadership", "probation"]
    got = httpx.get(f"{leadership.url}/_sim/received").json()
    assert [m["rule"] for m in got] == ["housing.placement"]
    assert httpx.get(f"{stack.mio.url}/_sim/received").json() == []


def test_technical_sla_from_hop_timestamps(stack: Stack) -> None:
    sim_config(stack.mio, per_message=[503])  # every referral needs two attempts
    stack.start_gateway()
    samples = SampleCases(seed=11)
    for _ in range(3):
        _register_and_refer(stack, samples)

    def completed() -> bool:
        got = httpx.get(f"{stack.probation.url}/_sim/received").json()
        return sum(1 for m in got if m["type"] == "referral.completed") == 3

    wait_for(completed, what="three completions")
    report = stack.client.get(f"/v1/sla/technical").json()
    (mio,) = report["counterparts"]
    assert mio["counterpart"] == "mio" and mio["deliveries"] == 3 and mio["delivered"] == 3
    assert mio["attempts_per_delivery"] == 2.0 and mio["dead_letter_share"] == 0.0
    assert 0 < mio["ack_p50_seconds"] <= mio["ack_p95_seconds"] < 10
    assert 0 < mio["complete_p50_seconds"] <= mio["complete_p95_seconds"] < 10
