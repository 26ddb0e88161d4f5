"""МИО codec: golden encode/decode, code tables, names byte-exact, malformed replies refused."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
import pytest

from adapters.mio.codec import MioAdapter
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.messages import parse_message
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.pipeline.ports import DecodeContext, EncodeContext, WireRequest, WireResponse, derived_message_id
from tests.adapters.golden_support import check_golden

MAPPINGS = load_mappings(ROOT / "gateway" / "mappings")
INSTANCE = MAPPINGS.instance("mio-kz-35")
NOW = datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)
ADAPTER = MioAdapter()
NAMES = "Ёлкина Әсел Ғалымқызы Қ Ң Ө Ұ Ү Һ І"

REFERRAL = parse_message({
    "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
    "case_id": "KRG-2026-000123", "occurred_at": "2026-03-02T09:15:00+05:00",
    "body": {"referral_id": "REF-1", "kind": "shelter.placement", "risk_id": "R-77",
             "details": {"note": NAMES, "children": 2}},
})
ESCALATION = parse_message({
    "message_id": "1f8fad5b-d9cb-469f-a165-70867728950e", "type": "escalation.raised",
    "case_id": "KRG-2026-000123", "occurred_at": "2026-03-04T09:15:00+05:00",
    "body": {"referral_id": "REF-1", "rule": "housing.placement", "deadline_at": "2026-03-04T09:15:00+05:00",
             "reason": "no shelter placement within 48 h"},
})


def _encode(message):  # noqa: ANN001, ANN202
    return ADAPTER.encode(message, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))


def test_referral_encodes_to_the_golden_request() -> None:
    wire = _encode(REFERRAL)
    assert wire.method == "POST" and wire.path == "/api/v1/referrals"
    assert wire.header("x-message-id") == str(REFERRAL.message_id)
    check_golden("mio", "referral.request.json", wire.body)
    assert NAMES.encode() in wire.body  # UTF-8 as is, not \\u-escaped


def test_escalation_encodes_to_the_golden_request() -> None:
    wire = _encode(ESCALATION)
    assert wire.path == "/api/v1/escalations"
    check_golden("mio", "escalation.request.json", wire.body)


@pytest.mark.parametrize("status,expected", [("ACCEPTED", "referral.accepted"), ("REJECTED", "referral.rejected")])
def test_decision_decodes(status: str, expected: str) -> None:
    body = orjson.dumps({"requestId": str(REFERRAL.message_id), "status": status, "reason": "нет мест",
                         "decidedAt": "2026-03-02T09:20:00+05:00"})
    check_golden("mio", f"decision.{status.lower()}.json", body)
    (reply,) = ADAPTER.decode_response(WireResponse(201, (), body), mappings=MAPPINGS, request=REFERRAL,
                                       context=DecodeContext(received_at=NOW))
    assert reply.type == expected and reply.body.referral_id == "REF-1" and reply.case_id == REFERRAL.case_id
    assert reply.message_id == derived_message_id(REFERRAL.message_id, expected)  # a retry yields the same id


def test_completion_callback_decodes_with_names_byte_exact() -> None:
    event_id = uuid.UUID("2f8fad5b-d9cb-469f-a165-70867728950e")
    body = orjson.dumps({"eventId": str(event_id), "event": "REFERRAL_COMPLETED", "referralId": "REF-1",
                         "caseRef": "KRG-2026-000123", "occurredAt": "2026-03-03T10:00:00+05:00",
                         "outcome": f"placed: {NAMES}"})
    check_golden("mio", "callback.completed.json", body)
    (msg,) = ADAPTER.decode_callback(WireRequest("POST", "/v1/inbound/mio", (), body), mappings=MAPPINGS,
                                     context=DecodeContext(received_at=NOW))
    assert msg.type == "referral.completed" and msg.message_id == event_id
    assert msg.body.outcome == f"placed: {NAMES}"
    assert msg.to_json().count(NAMES.encode()) == 1


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"requestId": "x"}', b'{"status": "MAYBE"}'])
def test_malformed_or_unknown_decision_is_refused(body: bytes) -> None:
    with pytest.raises(WireDecodeError):
        ADAPTER.decode_response(WireResponse(201, (), body), mappings=MAPPINGS, request=REFERRAL,
                                context=DecodeContext(received_at=NOW))


def test_other_message_types_are_not_encoded() -> None:
    case = parse_message({"message_id": str(uuid.uuid4()), "type": "plan.approved", "case_id": "C",
                          "occurred_at": "2026-03-02T09:15:00+05:00", "body": {"plan_id": "P"}})
    with pytest.raises(WireDecodeError):
        _encode(case)
