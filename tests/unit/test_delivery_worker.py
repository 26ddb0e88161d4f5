"""DeliveryWorker on FakeStore: a claimed delivery is sent once, settled by policy, its replies accepted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gateway.canonical.messages import AnyMessage, parse_message
from gateway.mapping import RetryPolicy
from gateway.observability import Metrics
from gateway.pipeline.accept import Accepter
from gateway.pipeline.delivery import DeliveryWorker
from gateway.pipeline.exchange import OutboundExchange
from gateway.pipeline.ports import DecodeContext, derived_message_id
from gateway.pipeline.routing import Router
from gateway.wire import WireRequest, WireResponse
from tests.fakes import FakeClock, FakeSigner, FakeStore, FakeTransport, FakeVerifier
from tests.unit.builders import MAPPINGS, case_registered, instance, referral_requested, with_instances

CASE = "35-2026-000001"
MAPPED = with_instances(MAPPINGS, instance("mio-kz-35", retry=RetryPolicy(max_attempts=3, base_delay_s=2.0)))


class Mio:
    """A tiny adapter: the canonical JSON out; a 200 with {"accepted": true} means the referral was accepted."""

    counterpart = "mio"

    def encode(self, message: AnyMessage, **_: Any) -> WireRequest:
        return WireRequest("POST", "/referrals", (), message.to_json())

    def decode_response(self, response: WireResponse, *, request: AnyMessage, context: DecodeContext,
                        **_: Any) -> list[AnyMessage]:
        if response.body != b'{"accepted":true}':
            return []
        return [parse_message({
            "message_id": str(derived_message_id(request.message_id, "accepted")), "type": "referral.accepted",
            "case_id": request.case_id, "occurred_at": context.received_at.isoformat(),
            "body": {"referral_id": request.body.referral_id}})]

    def decode_callback(self, *args: Any, **kwargs: Any) -> list[AnyMessage]:
        raise NotImplementedError


async def deliver(*answers: WireResponse) -> tuple[FakeStore, dict[str, Any], FakeTransport, FakeClock]:
    clock, store = FakeClock(), FakeStore()
    transport = FakeTransport({"mio-kz-35": answers})
    accepter = Accepter(store=store, router=Router(MAPPED), clock=clock, status_url=lambda mid: mid)
    worker = DeliveryWorker(store=store, accepter=accepter, adapters={"mio": Mio()}, mappings=MAPPED,
                            exchange=OutboundExchange(transport=transport, clock=clock, signer=FakeSigner(),
                                                      verifier=FakeVerifier()),
                            clock=clock, metrics=Metrics())
    await accepter.accept(message=case_registered(CASE, region="KZ-35"), source="probation")
    referral = referral_requested(CASE, kind="shelter.placement")
    await accepter.accept(message=referral, source="probation")
    await worker.run_until_idle(timeout_s=5.0)
    (delivery,) = store.deliveries_of(str(referral.message_id))
    return store, delivery, transport, clock


async def test_a_delivery_is_sent_once_and_its_reply_accepted() -> None:
    store, delivery, transport, clock = await deliver(WireResponse(200, body=b'{"accepted":true}'))
    assert transport.calls("mio-kz-35") == 1
    assert (delivery["state"], delivery["attempts"], delivery["claimed_by"]) == ("delivered", 1, None)
    assert delivery["finished_at"] == clock()
    (attempt,) = [h for h in store.hops_of("attempt") if h["peer"] == "mio-kz-35"]
    assert (attempt["result"], attempt["status_code"], attempt["signer"]) == ("delivered", 200, "fake-key")
    reply = next(m for m in store.messages.values() if m["type"] == "referral.accepted")
    assert reply["source"] == "mio-kz-35"
    assert store.referrals["REF-1"]["status"] == "accepted"
    # routed on to the Probation IS (which this worker has no adapter for: that attempt is a dead letter)
    assert [d["instance"] for d in store.deliveries_of(reply["message_id"])] == ["probation"]


async def test_a_retryable_answer_leaves_the_delivery_pending_for_later() -> None:
    store, delivery, transport, clock = await deliver(WireResponse(503, body=b"busy"))
    assert transport.calls("mio-kz-35") == 1  # the retry is due later: nothing more was sent
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("pending", 1, 503)
    assert delivery["reason"] == "counterpart answered 503"
    assert clock() <= delivery["next_attempt_at"] <= clock() + timedelta(seconds=2.0)
    assert await store.next_due() == delivery["next_attempt_at"]
    assert store.hops_of("attempt")[0]["result"] == "retry"


async def test_a_final_answer_is_a_dead_letter() -> None:
    store, delivery, transport, _ = await deliver(WireResponse(422, body=b'{"error":"unknown kind"}'))
    assert (delivery["state"], delivery["reason"]) == ("dead", "counterpart answered 422")
    assert store.hops_of("attempt")[0]["result"] == "dead"
