"""Accepter on FakeStore: stored, routed and logged in one transaction, exactly once per message_id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gateway.canonical.errors import MessageConflict
from gateway.canonical.messages import parse_message
from gateway.pipeline.accept import MATRIX_SOURCE, Accepted, Accepter
from gateway.pipeline.routing import Router
from tests.fakes import FakeClock, FakeDispatcher, FakeStore
from tests.unit.builders import MAPPINGS, case_registered, referral_requested, risk_detected

CASE = "35-2026-000001"


class Parts:
    def __init__(self, store: FakeStore | None = None) -> None:
        self.clock = FakeClock()
        self.store = store or FakeStore()
        self.accepter = Accepter(store=self.store, router=Router(MAPPINGS), clock=self.clock,
                                 status_url=lambda mid: f"/v1/messages/{mid}")
        self.notified: list[Accepted] = []
        self.accepter.listeners.append(self.notified.append)

    async def accept(self, message: Any, source: str = "probation") -> Accepted:
        return await self.accepter.accept(message=message, source=source)


async def test_a_new_message_is_stored_routed_and_logged() -> None:
    parts = Parts()
    await parts.accept(case_registered(CASE, region="KZ-35"))
    referral = referral_requested(CASE, kind="shelter.placement")
    result = await parts.accept(referral)
    mid = str(referral.message_id)
    assert (result.duplicate, result.queued, result.dispatched) == (False, 1, ())
    assert result.response == {"message_id": mid, "status": "accepted", "received_at": "2026-03-02T09:00:00Z",
                               "status_url": f"/v1/messages/{mid}"}
    assert parse_message(parts.store.messages[mid]["content"]) == referral
    (delivery,) = parts.store.deliveries_of(mid)
    assert (delivery["counterpart"], delivery["instance"], delivery["state"], delivery["attempts"]) == (
        "mio", "mio-kz-35", "pending", 0)
    assert parts.store.referrals["REF-1"]["status"] == "requested"
    (hop,) = [h for h in parts.store.hops if h["message_id"] == mid]
    assert (hop["hop"], hop["result"], hop["status_code"], hop["peer"]) == ("received", "accepted", 202, "probation")
    assert parts.notified[-1] == result


async def test_the_same_message_again_is_a_duplicate_with_the_stored_response() -> None:
    parts = Parts()
    message = case_registered(CASE)
    first = await parts.accept(message)
    parts.clock.advance(60)
    again = await parts.accept(message)
    assert again.duplicate
    assert again.response == first.response  # the first acceptance's time, not now
    assert len(parts.store.messages) == 1
    assert [h["result"] for h in parts.store.hops] == ["accepted", "duplicate"]


async def test_the_same_id_with_other_content_is_a_conflict() -> None:
    parts = Parts()
    first = case_registered(CASE, region="KZ-35")
    await parts.accept(first)
    other = case_registered(CASE, region="KZ-71", message_id=str(first.message_id))
    with pytest.raises(MessageConflict):
        await parts.accept(other)
    assert parts.store.cases[CASE]["region"] == "KZ-35"
    refused = parts.store.hops[-1]
    assert (refused["result"], refused["status_code"], refused["error"]) == ("refused", 422, "message-id-conflict")


async def test_a_detected_risk_creates_the_matrix_referrals_once() -> None:
    parts = Parts()
    await parts.accept(case_registered(CASE, region="KZ-35"))
    risk = risk_detected(CASE, domain="medical", level="R2", trigger="high_medical_need", risk_id="R-7")
    result = await parts.accept(risk)
    kinds = sorted(parse_message(parts.store.messages[d.message_id]["content"]).body.kind for d in result.derived)
    assert kinds == ["health.screening", "psych.support"]
    assert all(d.source == MATRIX_SOURCE and d.type == "referral.requested" for d in result.derived)
    assert {r["kind"]: r["risk_id"] for r in parts.store.referrals.values()} == {
        "health.screening": "R-7", "psych.support": "R-7"}
    for derived in result.derived:  # the counterpart, and the Probation IS told of it
        targets = sorted(d["instance"] for d in parts.store.deliveries_of(derived.message_id))
        assert targets == ["health", "probation"]
    assert len(parts.store.hops_of("derived")) == 2
    assert {n.message_id for n in parts.notified} >= {d.message_id for d in result.derived}

    counts = (len(parts.store.messages), len(parts.store.referrals), len(parts.store.deliveries))
    again = await parts.accept(risk)
    assert again.duplicate and again.derived == ()
    assert (len(parts.store.messages), len(parts.store.referrals), len(parts.store.deliveries)) == counts


async def test_a_case_registration_unparks_a_parked_referral() -> None:
    parts = Parts()
    referral = referral_requested(CASE, kind="shelter.placement")
    result = await parts.accept(referral)
    assert result.queued == 0
    (parked,) = parts.store.deliveries_of(str(referral.message_id))
    assert (parked["state"], parked["instance"]) == ("parked", None)
    assert parked["reason"] == "the case is not registered yet: no case.registered received"

    parts.clock.advance(300)
    await parts.accept(case_registered(CASE, region="KZ-71"))
    assert (parked["state"], parked["instance"], parked["reason"]) == ("pending", "mio-kz-71", None)
    assert parked["next_attempt_at"] == parts.clock()


async def test_a_seated_worker_claims_in_the_accepting_transaction_and_starts_after_commit() -> None:
    parts = Parts()
    registration = case_registered(CASE, region="KZ-35")
    await parts.accept(registration)
    worker = FakeDispatcher(parts.store, room=1)
    parts.accepter.handoff.attach(worker)
    referral = referral_requested(CASE, kind="shelter.placement")
    result = await parts.accept(referral)
    (delivery,) = parts.store.deliveries_of(str(referral.message_id))
    assert (delivery["state"], delivery["claimed_by"], delivery["attempts"]) == ("in_flight", "w-fake", 1)
    assert delivery["lease_until"] == parts.clock() + timedelta(seconds=60)
    (claimed,) = result.dispatched
    assert (claimed.id, claimed.instance, claimed.attempts) == (delivery["id"], "mio-kz-35", 1)
    assert parse_message(claimed.case_content) == registration  # the adapter gets the person
    assert worker.dispatched == [claimed]
    assert worker.wakes == 0  # everything queued was handed over


async def test_a_worker_without_room_for_all_is_woken_for_the_rest() -> None:
    parts = Parts()
    await parts.accept(case_registered(CASE, region="KZ-35"))
    worker = FakeDispatcher(parts.store, room=1)
    parts.accepter.handoff.attach(worker)
    result = await parts.accept(risk_detected(CASE, domain="housing", level="R3", trigger="homeless"))
    (derived,) = result.derived  # shelter.placement: МИО, and the Probation IS told
    assert derived.queued == 2 and len(derived.dispatched) == 1
    assert len(worker.dispatched) == 1 and worker.wakes == 1
    states = sorted(d["state"] for d in parts.store.deliveries_of(derived.message_id))
    assert states == ["in_flight", "pending"]


async def test_claims_of_a_transaction_that_rolls_back_are_given_back_and_never_started() -> None:
    class FailingLog(FakeStore):
        def insert_exchanges(self, tx: Any, rows: list[dict[str, Any]]) -> None:
            raise RuntimeError("the exchange log refused the rows")

    parts = Parts(FailingLog())
    worker = FakeDispatcher(parts.store, room=1)
    parts.accepter.handoff.attach(worker)
    with pytest.raises(RuntimeError):
        await parts.accept(referral_requested(CASE, kind="document.restore"))  # con serves every region
    assert worker.taken["con"] == 0 and worker.room == 1
    assert worker.dispatched == []
    assert parts.store.messages == {} and parts.store.deliveries == {}


@pytest.mark.parametrize("seat", ["never", "stood_up"])
async def test_an_unseated_handoff_leaves_the_delivery_pending(seat: str) -> None:
    parts = Parts()
    await parts.accept(case_registered(CASE, region="KZ-35"))
    worker = FakeDispatcher(parts.store, room=5)
    if seat == "stood_up":
        parts.accepter.handoff.attach(worker)
        parts.accepter.handoff.detach(worker)
    referral = referral_requested(CASE, kind="shelter.placement")
    result = await parts.accept(referral)
    (delivery,) = parts.store.deliveries_of(str(referral.message_id))
    assert (delivery["state"], delivery["claimed_by"], delivery["attempts"]) == ("pending", None, 0)
    assert result.dispatched == () and worker.dispatched == []
    assert worker.wakes == (1 if seat == "stood_up" else 0)  # a worker that stood up still looks at once
