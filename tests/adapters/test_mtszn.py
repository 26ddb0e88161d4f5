"""МТСЗН codec and simulator: golden encode/decode, code tables, names byte-exact, malformed input refused,
and the whole exchange (referral, decision, callback, lookup) over real HTTP on loopback."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response

from adapters.mtszn.codec import REFERRALS_PATH, STATUS_SEARCH_PATH, MtsznAdapter
from adapters.mtszn.simulator import create_app as mtszn_app
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.iin import iin_check_digit
from gateway.canonical.messages import CaseRegistered, parse_message
from gateway.config import ROOT
from gateway.mapping import UnknownCode, load_mappings
from gateway.pipeline.ports import (
    DecodeContext,
    EncodeContext,
    RecordLookup,
    WireRequest,
    WireResponse,
    derived_message_id,
)
from gateway.samples import SampleCases, make_iin
from tests.adapters.golden_support import check_golden
from tests.harness import ThreadServer, wait_for

MAPPINGS = load_mappings(ROOT / "gateway" / "mappings")
INSTANCE = MAPPINGS.instance("mtszn")
NOW = datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)
ADAPTER = MtsznAdapter()
DECODE = DecodeContext(received_at=NOW)

SURNAME = "Ёлкина-Һасенова-Үсенова"
GIVEN = "Әсел Ұлжан Өмірзая"
PATRONYMIC = "Семёновна Ғаниқызы Аңсаған"
KAZAKH = "ёәғқңөұүһі"
GOLDEN_IIN = "061211600012"  # valid, female, born 2006-12-11
MALE_IIN = "900101300017"  # valid, male, born 1990-01-01
STARTED_TEXT = "Жұмыспен қамтудың жеке трегі басталды: кәсіптік оқытуға жіберілді"


def _case(*, iin: str = GOLDEN_IIN, region: str = "KZ-35", **person: Any) -> CaseRegistered:
    body_person = {"iin": iin, "surname": SURNAME, "given_name": GIVEN, "patronymic": PATRONYMIC,
                   "birth_date": "2006-12-11", "sex": "female", **person}
    case = parse_message({
        "message_id": "9a8fad5b-d9cb-469f-a165-70867728950e", "type": "case.registered",
        "case_id": "KRG-2026-000123", "occurred_at": "2026-03-01T10:00:00+05:00",
        "body": {"region": region, "person": {k: v for k, v in body_person.items() if v is not None}},
    })
    assert isinstance(case, CaseRegistered)
    return case


CASE = _case()
TRACK = parse_message({
    "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
    "case_id": "KRG-2026-000123", "occurred_at": "2026-03-02T09:15:00+05:00",
    "body": {"referral_id": "REF-1", "kind": "employment.track", "risk_id": "R-77",
             "details": {"note": "тігінші болғысы келеді", "children": 2}},
})
CONTRACT = parse_message({
    "message_id": "1f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
    "case_id": "AST-2026-000456", "occurred_at": "2026-03-02T09:16:00+05:00",
    "body": {"referral_id": "REF-2", "kind": "social.contract"},
})


def _encode(message, case: CaseRegistered | None = CASE) -> WireRequest:  # noqa: ANN001
    return ADAPTER.encode(message, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW, case=case))


def _decide(body: bytes, request=TRACK, status: int = 201):  # noqa: ANN001, ANN202
    return ADAPTER.decode_response(WireResponse(status, (), body), mappings=MAPPINGS, request=request, context=DECODE)


def _callback(body: bytes):  # noqa: ANN202
    return ADAPTER.decode_callback(WireRequest("POST", "/v1/inbound/mtszn", (), body), mappings=MAPPINGS,
                                   context=DECODE)


def _assert_no_personal_data(text: str, iin: str = GOLDEN_IIN) -> None:
    assert iin not in text
    for name in (SURNAME, GIVEN, PATRONYMIC):
        assert name not in text


def iin_with_digit(digit: int, *, birth: date = date(1990, 1, 1)) -> str:
    """A valid female IIN whose 11th digit (the simulator's lookup key) is `digit`."""
    for serial in range(digit, 10000, 10):
        first11 = f"{birth:%y%m%d}4{serial:04d}"
        check = iin_check_digit(first11)
        if check is not None:
            return first11 + str(check)
    raise AssertionError("no such IIN")


# -- encode --------------------------------------------------------------------------------------------------


def test_employment_track_encodes_to_the_golden_request() -> None:
    wire = _encode(TRACK)
    assert wire.method == "POST" and wire.path == REFERRALS_PATH == "/mtszn/api/v1/referrals"
    assert wire.header("x-message-id") == str(TRACK.message_id)
    assert wire.header("content-type") == "application/json; charset=utf-8"
    check_golden("mtszn", "referral.employment_track.request.json", wire.body)
    doc = orjson.loads(wire.body)
    assert doc["service_code"] == "EMPL_TRACK" and doc["region"] == "Қарағанды облысы"
    assert doc["citizen"] == {"iin": GOLDEN_IIN, "last_name": SURNAME, "first_name": GIVEN,
                              "middle_name": PATRONYMIC, "birth_date": "2006-12-11", "gender": "2"}
    assert doc["sent_at"] == NOW.isoformat() and doc["referral_date"] == "2026-03-02T09:15:00+05:00"
    # UTF-8 as is, not \u-escaped; the IIN is in the body only, never in the path or a header
    assert all(s.encode() in wire.body for s in (SURNAME, GIVEN, PATRONYMIC)) and b"\\u" not in wire.body
    assert set(KAZAKH) <= set((SURNAME + GIVEN + PATRONYMIC).lower())
    assert GOLDEN_IIN not in wire.path and all(GOLDEN_IIN not in v for _, v in wire.headers)


def test_social_contract_encodes_to_the_golden_request() -> None:
    case = _case(iin=MALE_IIN, region="KZ-71", surname="Нұрланов", given_name="Ерлан", patronymic=None,
                 birth_date="1990-01-01", sex="male")
    wire = _encode(CONTRACT, case)
    check_golden("mtszn", "referral.social_contract.request.json", wire.body)
    doc = orjson.loads(wire.body)
    assert doc["service_code"] == "SOC_CONTRACT" and doc["region"] == "Астана"
    assert doc["citizen"]["gender"] == "1" and "middle_name" not in doc["citizen"]
    assert "risk_ref" not in doc and "details" not in doc


def test_encode_refuses_what_it_cannot_send() -> None:
    with pytest.raises(WireDecodeError, match="registration"):
        _encode(TRACK, case=None)
    plan = parse_message({"message_id": str(uuid.uuid4()), "type": "plan.approved", "case_id": "C",
                          "occurred_at": "2026-03-02T09:15:00+05:00", "body": {"plan_id": "P"}})
    with pytest.raises(WireDecodeError, match="plan.approved"):
        _encode(plan)
    shelter = TRACK.model_copy(update={"body": TRACK.body.model_copy(update={"kind": "shelter.placement"})})
    with pytest.raises(WireDecodeError, match="shelter.placement"):
        _encode(shelter)
    with pytest.raises(UnknownCode, match="regions") as info:
        _encode(TRACK, _case(region="KZ-98"))
    _assert_no_personal_data(str(info.value))


# -- synchronous decision ------------------------------------------------------------------------------------


def test_registered_decision_decodes_to_accepted() -> None:
    body = orjson.dumps({"request_id": str(TRACK.message_id), "referral_no": "REF-1", "decision": "registered",
                         "registration_no": "EMP-0A1B2C3D4E", "decided_at": "2026-03-02T09:20:00+05:00"})
    check_golden("mtszn", "decision.registered.json", body)
    (reply,) = _decide(body)
    assert reply.type == "referral.accepted" and reply.body.referral_id == "REF-1"
    assert reply.case_id == TRACK.case_id and reply.occurred_at == datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)
    assert reply.message_id == derived_message_id(TRACK.message_id, "referral.accepted")  # a retry: same id


def test_refused_decision_decodes_to_rejected_with_a_readable_reason() -> None:
    body = orjson.dumps({"request_id": str(TRACK.message_id), "referral_no": "REF-1", "decision": "refused",
                         "reason_code": "NOT_WORKING_AGE", "decided_at": "2026-03-02T09:20:00+05:00"})
    check_golden("mtszn", "decision.refused.json", body)
    (reply,) = _decide(body, status=200)
    assert reply.type == "referral.rejected" and reply.body.reason == "the person is not of working age"
    assert reply.message_id == derived_message_id(TRACK.message_id, "referral.rejected")


def test_an_unlisted_refusal_code_reads_as_the_default_and_keeps_the_code() -> None:
    body = orjson.dumps({"request_id": str(TRACK.message_id), "decision": "refused", "reason_code": "Q-17"})
    (reply,) = _decide(body, status=200)
    assert reply.body.reason == "refused by the employment centre for another reason (code Q-17)"
    assert reply.occurred_at == NOW  # no decided_at: the gateway's reception time


@pytest.mark.parametrize("body,why", [
    (b"not json", "not JSON"),
    (b'[]', "JSON object"),
    (b'{"truncated": <Envelope', "not JSON"),
    (b'{"decision": "registered"}', "request_id"),
    (b'{"request_id": "0f8fad5b-d9cb-469f-a165-70867728950e"}', "decision"),
    (b'{"request_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "decision": "MAYBE"}', "mtszn.decision"),
    (b'{"request_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "decision": "refused"}', "reason_code"),
    (b'{"request_id": "ffffffff-d9cb-469f-a165-70867728950e", "decision": "registered"}', "another request_id"),
    (b'{"request_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "referral_no": "REF-9", "decision": "registered"}',
     "another referral_no"),
    (b'{"request_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "decision": "registered",'
     b' "decided_at": "2026-03-02T09:20:00"}', "occurred_at"),
])
def test_malformed_or_unknown_decision_is_refused(body: bytes, why: str) -> None:
    with pytest.raises(WireDecodeError, match=why):
        _decide(body)


# -- callbacks -----------------------------------------------------------------------------------------------


def test_track_started_callback_decodes_to_completed() -> None:
    event_id = uuid.UUID("2f8fad5b-d9cb-469f-a165-70867728950e")
    body = orjson.dumps({"event_id": str(event_id), "event_type": "TRACK_STARTED", "referral_no": "REF-1",
                         "case_ref": "KRG-2026-000123", "service_code": "EMPL_TRACK",
                         "occurred_at": "2026-03-03T10:00:00+05:00", "result_text": STARTED_TEXT,
                         "citizen": {"last_name": SURNAME, "first_name": GIVEN, "middle_name": PATRONYMIC}})
    check_golden("mtszn", "callback.track_started.json", body)
    (msg,) = _callback(body)
    assert msg.type == "referral.completed" and msg.message_id == event_id
    assert msg.case_id == "KRG-2026-000123" and msg.body.referral_id == "REF-1"
    assert msg.occurred_at == datetime(2026, 3, 3, 5, 0, tzinfo=timezone.utc)
    assert msg.body.outcome == STARTED_TEXT and STARTED_TEXT.encode() in msg.to_json()


@pytest.mark.parametrize("event,outcome", [("CONTRACT_SIGNED", "social contract signed"),
                                           ("CONTRACT_COMPLETED", "social contract completed")])
def test_contract_callbacks_without_text_get_a_readable_outcome(event: str, outcome: str) -> None:
    body = orjson.dumps({"event_id": str(uuid.uuid4()), "event_type": event, "referral_no": "REF-2",
                         "case_ref": "AST-2026-000456", "service_code": "SOC_CONTRACT",
                         "occurred_at": "2026-03-05T10:00:00+05:00"})
    (msg,) = _callback(body)
    assert msg.type == "referral.completed" and msg.body.outcome == outcome


def test_withdrawn_callback_decodes_to_rejected() -> None:
    body = orjson.dumps({"event_id": "3f8fad5b-d9cb-469f-a165-70867728950e", "event_type": "REFERRAL_WITHDRAWN",
                         "referral_no": "REF-1", "case_ref": "KRG-2026-000123", "reason_code": "NO_SHOW",
                         "occurred_at": "2026-03-10T10:00:00+05:00"})
    check_golden("mtszn", "callback.withdrawn.json", body)
    (msg,) = _callback(body)
    assert msg.type == "referral.rejected"
    assert msg.body.reason == "the person did not appear at the employment centre"


_GOOD_CALLBACK = {"event_id": "2f8fad5b-d9cb-469f-a165-70867728950e", "event_type": "TRACK_STARTED",
                  "referral_no": "REF-1", "case_ref": "KRG-2026-000123", "occurred_at": "2026-03-03T10:00:00+05:00"}


@pytest.mark.parametrize("change,why", [
    ({"event_type": "TRACK_PAUSED"}, "mtszn.event"),
    ({"event_id": None}, "event_id"),
    ({"event_id": "not-a-uuid"}, "message_id"),
    ({"referral_no": 17}, "referral_no"),
    ({"case_ref": ""}, "case_ref"),
    ({"occurred_at": "yesterday"}, "occurred_at"),
    ({"service_code": "SOC_CONTRACT"}, "does not belong"),
    ({"service_code": "HOUSING"}, "mtszn.service"),
    ({"event_type": "REFERRAL_WITHDRAWN"}, "reason_code"),
])
def test_malformed_or_unknown_callback_is_refused(change: dict, why: str) -> None:
    doc = {**_GOOD_CALLBACK, **change, "citizen": {"iin": GOLDEN_IIN, "last_name": SURNAME}}
    with pytest.raises(WireDecodeError, match=why) as info:
        _callback(orjson.dumps(doc))
    _assert_no_personal_data(str(info.value))


def test_callback_that_is_not_json_is_refused() -> None:
    with pytest.raises(WireDecodeError, match="not JSON"):
        _callback(b'{"event_id": "x", "iin": "061211600012"')


# -- record lookups ------------------------------------------------------------------------------------------

LOOKUP = RecordLookup(request_id="4f8fad5b-d9cb-469f-a165-70867728950e", record_kind="employment_status",
                      iin=GOLDEN_IIN, purpose="probation case KRG-2026-000123: economic risk R-77")


def _lookup_answer(doc: dict, status: int = 200, lookup: RecordLookup = LOOKUP):  # noqa: ANN202
    return ADAPTER.decode_lookup(WireResponse(status, (), orjson.dumps(doc)), mappings=MAPPINGS, lookup=lookup,
                                 context=DECODE)


def test_lookup_encodes_to_the_golden_request_with_the_iin_only_in_the_body() -> None:
    wire = ADAPTER.encode_lookup(LOOKUP, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))
    assert wire.method == "POST" and wire.path == STATUS_SEARCH_PATH
    check_golden("mtszn", "lookup.request.json", wire.body)
    assert orjson.loads(wire.body)["iin"] == GOLDEN_IIN
    assert GOLDEN_IIN not in wire.path and all(GOLDEN_IIN not in v for _, v in wire.headers)


def test_lookup_refuses_other_record_kinds_and_bad_iins() -> None:
    with pytest.raises(WireDecodeError, match="osms_status"):
        ADAPTER.encode_lookup(RecordLookup(LOOKUP.request_id, "osms_status", GOLDEN_IIN, "p"), mappings=MAPPINGS,
                              instance=INSTANCE, context=EncodeContext(now=NOW))
    with pytest.raises(WireDecodeError, match="IIN is not valid") as info:
        ADAPTER.encode_lookup(RecordLookup(LOOKUP.request_id, "employment_status", "061211600013", "p"),
                              mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))
    assert "061211600013" not in str(info.value)


def test_found_lookup_answer_decodes() -> None:
    doc = {"request_id": LOOKUP.request_id, "record_type": "EMPLOYMENT_STATUS", "found": True,
           "as_of": "2026-03-02T09:21:00+05:00", "status": "UNEMPLOYED", "registered_on": "2025-11-03",
           "employment_centre": "Қарағанды облысының жұмыспен қамту орталығы", "social_contract": True}
    check_golden("mtszn", "lookup.found.json", orjson.dumps(doc))
    result = _lookup_answer(doc)
    assert result.found and result.record_kind == "employment_status"
    assert result.data == {"status": "unemployed", "registered_on": "2025-11-03", "social_contract": True,
                           "employment_centre": "Қарағанды облысының жұмыспен қамту орталығы"}
    assert result.as_of == datetime(2026, 3, 2, 4, 21, tzinfo=timezone.utc)


def test_not_found_lookup_answer_decodes() -> None:
    doc = {"request_id": LOOKUP.request_id, "record_type": "EMPLOYMENT_STATUS", "found": False}
    check_golden("mtszn", "lookup.not_found.json", orjson.dumps(doc))
    result = _lookup_answer(doc)
    assert not result.found and result.data == {} and result.as_of == NOW


@pytest.mark.parametrize("change,status,why", [
    ({"status": "RETIRED"}, 200, "mtszn.employment_status"),
    ({"found": "yes"}, 200, "found"),
    ({"request_id": str(uuid.uuid4())}, 200, "another request_id"),
    ({"record_type": "OSMS"}, 200, "mtszn.record"),
    ({"as_of": "2026-03-02T09:21:00"}, 200, "no UTC offset"),
    ({"registered_on": "03.11.2025"}, 200, "registered_on"),
    ({"social_contract": "да"}, 200, "social_contract"),
    ({}, 503, "HTTP 503"),
])
def test_malformed_lookup_answer_is_refused(change: dict, status: int, why: str) -> None:
    doc = {"request_id": LOOKUP.request_id, "found": True, "status": "EMPLOYED", **change}
    with pytest.raises(WireDecodeError, match=why):
        _lookup_answer(doc, status)


# -- over real HTTP on loopback ------------------------------------------------------------------------------


class Receiver:
    """The gateway's inbound endpoint, reduced to what this test needs: it keeps each callback's raw bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.app = FastAPI()

        @self.app.post("/v1/inbound/mtszn")
        async def inbound(request: Request) -> Response:
            self.bodies.append(await request.body())
            return Response(b'{"status":"accepted"}', status_code=202, media_type="application/json")

    def for_referral(self, referral_id: str) -> list[bytes]:
        return [b for b in self.bodies if orjson.loads(b).get("referral_no") == referral_id]


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[ThreadServer, Receiver]]:
    receiver = Receiver()
    rx = ThreadServer(receiver.app).start()
    sim = ThreadServer(mtszn_app(name="mtszn-test", callback_url=f"{rx.url}/v1/inbound/mtszn")).start()
    httpx.post(f"{sim.url}/_sim/config", json={"callback_delay_ms": 0}).raise_for_status()
    try:
        yield sim, receiver
    finally:
        sim.stop()
        rx.stop()


def _live_case(samples: SampleCases, **person: Any) -> CaseRegistered:
    raw = samples.case()[0]
    raw["body"]["person"].update(surname=SURNAME, given_name=GIVEN, patronymic=PATRONYMIC, **person)
    case = parse_message(raw)
    assert isinstance(case, CaseRegistered)
    return case


def _live_referral(samples: SampleCases, case: CaseRegistered, kind: str):  # noqa: ANN202
    raw = samples.shelter_referral(case.case_id)
    raw["body"]["kind"] = kind
    return parse_message(raw)


def _send(sim: ThreadServer, wire: WireRequest) -> WireResponse:
    r = httpx.post(sim.url + wire.path, content=wire.body, headers=dict(wire.headers), timeout=5)
    return WireResponse(r.status_code, tuple(r.headers.items()), r.content)


@pytest.mark.parametrize("kind,event", [("employment.track", "TRACK_STARTED"), ("social.contract", "CONTRACT_SIGNED")])
def test_referral_is_accepted_then_completed_by_callback_with_names_byte_exact(
    live: tuple[ThreadServer, Receiver], kind: str, event: str,
) -> None:
    sim, receiver = live
    samples = SampleCases(seed=41 if kind == "employment.track" else 42)
    case = _live_case(samples)
    referral = _live_referral(samples, case, kind)
    now = datetime.now(timezone.utc)
    wire = ADAPTER.encode(referral, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=now, case=case))

    response = _send(sim, wire)
    assert response.status == 201
    (accepted,) = ADAPTER.decode_response(response, mappings=MAPPINGS, request=referral,
                                          context=DecodeContext(received_at=now))
    assert accepted.type == "referral.accepted" and accepted.body.referral_id == referral.body.referral_id
    assert accepted.message_id == derived_message_id(referral.message_id, "referral.accepted")

    # the simulator stored the citizen exactly as sent
    stored = next(d for d in httpx.get(f"{sim.url}/_sim/received").json()
                  if d["request_id"] == str(referral.message_id))
    assert stored["citizen"]["last_name"] == SURNAME and stored["citizen"]["middle_name"] == PATRONYMIC
    assert stored["region"] == MAPPINGS.table("regions").external(case.body.region)

    (raw,) = wait_for(lambda: receiver.for_referral(referral.body.referral_id), timeout=10, what="the callback")
    for name in (SURNAME, GIVEN, PATRONYMIC):  # the same UTF-8 bytes came back, not \u-escaped
        assert name.encode() in wire.body and name.encode() in raw
    assert b"\\u" not in raw and GOLDEN_IIN.encode() not in raw and case.body.person.iin.encode() not in raw

    received_at = datetime.now(timezone.utc)
    (completed,) = ADAPTER.decode_callback(WireRequest("POST", "/v1/inbound/mtszn", (), raw), mappings=MAPPINGS,
                                           context=DecodeContext(received_at=received_at))
    doc = orjson.loads(raw)
    assert doc["event_type"] == event
    assert completed.type == "referral.completed" and completed.case_id == case.case_id
    assert completed.body.referral_id == referral.body.referral_id
    assert completed.message_id == uuid.UUID(doc["event_id"])
    assert completed.occurred_at == datetime.fromisoformat(doc["occurred_at"])
    assert completed.body.outcome == doc["result_text"] and completed.body.outcome.encode() in raw
    assert set("әі") <= set(completed.body.outcome.lower())  # Kazakh letters came through

    # a retry of the same request gets the first answer, byte for byte, and no second registration or callback
    again = _send(sim, wire)
    assert (again.status, again.body) == (response.status, response.body)
    stats = httpx.get(f"{sim.url}/_sim/stats").json()
    assert len(stats["attempts"][str(referral.message_id)]) == 2
    assert str(referral.message_id) not in stats["processed_twice"]
    assert len(receiver.for_referral(referral.body.referral_id)) == 1


def test_a_person_not_of_working_age_is_refused_without_callback(live: tuple[ThreadServer, Receiver]) -> None:
    sim, receiver = live
    samples = SampleCases(seed=71)
    birth = date(1950, 5, 5)
    case = _live_case(samples, iin=make_iin(random.Random(1), birth), birth_date=birth.isoformat())
    referral = _live_referral(samples, case, "employment.track")
    wire = ADAPTER.encode(referral, mappings=MAPPINGS, instance=INSTANCE,
                          context=EncodeContext(now=datetime.now(timezone.utc), case=case))
    response = _send(sim, wire)
    assert response.status == 200
    (rejected,) = ADAPTER.decode_response(response, mappings=MAPPINGS, request=referral, context=DECODE)
    assert rejected.type == "referral.rejected" and rejected.body.reason == "the person is not of working age"
    # a registered referral sent after it gets its callback; this one never does
    other = _live_case(samples)
    ok = _live_referral(samples, other, "social.contract")
    assert _send(sim, ADAPTER.encode(ok, mappings=MAPPINGS, instance=INSTANCE,
                                     context=EncodeContext(now=NOW, case=other))).status == 201
    wait_for(lambda: receiver.for_referral(ok.body.referral_id), timeout=10, what="the later callback")
    assert receiver.for_referral(referral.body.referral_id) == []


@pytest.mark.parametrize("digit,expected", [
    (0, None),
    (1, {"status": "unemployed", "social_contract": False}),
    (4, {"status": "in_training", "social_contract": True}),
    (5, {"status": "employed", "social_contract": False}),
    (9, {"status": "deregistered", "social_contract": False}),
])
def test_lookup_end_to_end(live: tuple[ThreadServer, Receiver], digit: int, expected: dict | None) -> None:
    sim, _ = live
    iin = iin_with_digit(digit)
    lookup = RecordLookup(request_id=str(uuid.uuid4()), record_kind="employment_status", iin=iin,
                          purpose="probation case KRG-2026-000123")
    now = datetime.now(timezone.utc)
    wire = ADAPTER.encode_lookup(lookup, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=now))
    response = _send(sim, wire)
    assert response.status == 200 and iin.encode() not in response.body
    result = ADAPTER.decode_lookup(response, mappings=MAPPINGS, lookup=lookup, context=DecodeContext(received_at=now))
    assert result.record_kind == "employment_status"
    assert abs(result.as_of - now) < timedelta(minutes=1)
    if expected is None:
        assert not result.found and result.data == {}
    else:
        assert result.found and {k: result.data[k] for k in expected} == expected
        assert date.fromisoformat(str(result.data["registered_on"])).year == 2025
        assert str(result.data["employment_centre"]).endswith("жұмыспен қамту орталығы")
    # the same request id again: the same answer, the simulator counts one lookup
    assert _send(sim, wire).body == response.body
    assert httpx.get(f"{sim.url}/_sim/stats").json()["processed_twice"] == []


@pytest.mark.parametrize("path,body,why", [
    (REFERRALS_PATH, b"{not json", "not JSON"),
    (REFERRALS_PATH, b"[1]", "JSON object"),
    (REFERRALS_PATH, b'{"referral_no": "R"}', "request_id"),
    (STATUS_SEARCH_PATH, b'{"request_id": "5f8fad5b-d9cb-469f-a165-70867728950e", "record_type":'
                         b' "EMPLOYMENT_STATUS", "iin": "061211600013"}', "not a valid IIN"),
])
def test_simulator_answers_400_with_a_json_error(live: tuple[ThreadServer, Receiver], path: str, body: bytes,
                                                 why: str) -> None:
    sim, _ = live
    r = httpx.post(sim.url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "bad_request" and why in r.json()["detail"]
    assert "061211600013" not in r.text


def test_simulator_refuses_a_referral_with_a_bad_citizen(live: tuple[ThreadServer, Receiver]) -> None:
    sim, _ = live
    doc = orjson.loads(_encode(TRACK).body)
    doc.update(request_id=str(uuid.uuid4()), service_code="EMPL_TRACK")
    doc["citizen"]["gender"] = "F"
    r = httpx.post(sim.url + REFERRALS_PATH, content=orjson.dumps(doc))
    assert r.status_code == 400 and "gender" in r.json()["detail"]
    doc.update(request_id=str(uuid.uuid4()), service_code="HOUSING")
    r = httpx.post(sim.url + REFERRALS_PATH, content=orjson.dumps(doc))
    assert r.status_code == 400 and "service_code" in r.json()["detail"]
    assert SURNAME not in r.text and GOLDEN_IIN not in r.text
