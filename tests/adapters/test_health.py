"""Health registries codec (HL7 FHIR R4 JSON): golden encode/decode, every resource valid FHIR, Kazakh names
byte-exact, malformed answers refused, and the simulator over real loopback HTTP (referral, callback, lookups)."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.health.codec import (
    CASE_ID_SYSTEM,
    FHIR_JSON,
    IIN_SYSTEM,
    REFERRAL_ID_SYSTEM,
    SERVICE_SYSTEM,
    TASK_OUTPUT_SYSTEM,
    HealthAdapter,
    person_from_patient,
    validate_resource,
)
from adapters.health.simulator import CLINICS, create_app, registry_patient_id
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.iin import iin_check_digit
from gateway.canonical.messages import PRINTABLE, CaseRegistered, parse_message
from gateway.config import ROOT
from gateway.mapping import load_mappings
from gateway.pipeline.ports import (
    DecodeContext,
    EncodeContext,
    RecordLookup,
    WireRequest,
    WireResponse,
    derived_message_id,
)
from gateway.samples import SampleCases
from tests.adapters.golden_support import check_golden
from tests.harness import ThreadServer, wait_for

MAPPINGS = load_mappings(ROOT / "gateway" / "mappings")
INSTANCE = MAPPINGS.instance("health")
NOW = datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)
ADAPTER = HealthAdapter()
KAZAKH = "ёәғқңөұүһі"
PERSON = {"iin": "061211600012", "surname": "Һасенова-Ёлкина", "given_name": "Әсел Аңсаған",
          "patronymic": "Өмірзаққызы Ғүлжұмабике", "birth_date": "2006-12-11", "sex": "female"}
CASE = parse_message({
    "message_id": "9f8fad5b-d9cb-469f-a165-70867728950e", "type": "case.registered", "case_id": "KRG-2026-000123",
    "occurred_at": "2026-03-01T10:00:00+05:00",
    "body": {"region": "KZ-35", "person": PERSON, "release_date": "2026-02-27", "has_minor_children": True},
})
REFERRAL = parse_message({
    "message_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
    "case_id": "KRG-2026-000123", "occurred_at": "2026-03-02T09:15:00+05:00",
    "body": {"referral_id": "REF-H-1", "kind": "health.attachment", "risk_id": "R-77",
             "details": {"note": "Қарағанды, адаптация орталығы", "children": 2}},
})
TASK_ID = "5b3f5d2e-6a1c-4f0e-9d57-0c2b8e1a4f63"


def _iin(serial: int, prefix: str = "9001014") -> str:
    first11 = f"{prefix}{serial:04d}"
    check = iin_check_digit(first11)
    assert check is not None, "pick another serial"
    return first11 + str(check)


def _encode(message, case=CASE):  # noqa: ANN001, ANN202
    return ADAPTER.encode(message, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW, case=case))


def _decision(status: str, *, referral_id: str = "REF-H-1", **task_extra: Any) -> dict[str, Any]:
    task = {"resourceType": "Task", "id": TASK_ID, "meta": {"versionId": "1"},
            "basedOn": [{"reference": "ServiceRequest/sr-1",
                         "identifier": {"system": REFERRAL_ID_SYSTEM, "value": referral_id}}],
            "groupIdentifier": {"system": CASE_ID_SYSTEM, "value": "KRG-2026-000123"},
            "status": status, "intent": "order", "lastModified": "2026-03-02T09:20:00+05:00", **task_extra}
    created = {"status": "201 Created"}
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {**created, "location": "Patient/p-1/_history/1"}},
        {"response": {**created, "location": "ServiceRequest/sr-1/_history/1"}},
        {"fullUrl": f"Task/{TASK_ID}", "resource": task,
         "response": {**created, "location": f"Task/{TASK_ID}/_history/1"}},
    ]}


def _decode_response(body: bytes, status: int = 200, request=REFERRAL):  # noqa: ANN001, ANN202
    return ADAPTER.decode_response(WireResponse(status, (("content-type", FHIR_JSON),), body), mappings=MAPPINGS,
                                   request=request, context=DecodeContext(received_at=NOW))


def _decode_callback(body: bytes):  # noqa: ANN202
    return ADAPTER.decode_callback(WireRequest("POST", "/v1/inbound/health", (("content-type", FHIR_JSON),), body),
                                   mappings=MAPPINGS, context=DecodeContext(received_at=NOW))


def _completed_task(outcome: str = f"Прикреплена: {CLINICS[0][1]}", **changes: Any) -> dict[str, Any]:
    task = _decision("completed")["entry"][2]["resource"]
    task.update(meta={"versionId": "2"}, lastModified="2026-03-03T10:00:00+05:00",
                output=[{"type": {"coding": [{"system": TASK_OUTPUT_SYSTEM, "code": "outcome"}]},
                         "valueString": outcome}])
    task.update(changes)
    return task


def _lookup(kind: str, iin: str) -> RecordLookup:
    return RecordLookup(request_id="7d0c6c52-2f55-4a43-8f0c-3d1f1b0a9e11", record_kind=kind, iin=iin,
                        purpose="ИПР: медицинский домен")


def _validate_all(doc: dict[str, Any]) -> list[str]:
    """Validate a resource and, for a Bundle, each entry's resource on its own; return the types seen."""
    validate_resource(doc)
    seen = [doc["resourceType"]]
    for entry in doc.get("entry") or []:
        if "resource" in entry:
            get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
            seen.append(entry["resource"]["resourceType"])
    return seen


# --- encode -----------------------------------------------------------------------------------------------------


def test_referral_encodes_to_the_golden_transaction() -> None:
    wire = _encode(REFERRAL)
    assert (wire.method, wire.path) == ("POST", "/")
    assert wire.header("content-type") == FHIR_JSON and wire.header("x-message-id") == str(REFERRAL.message_id)
    check_golden("health", "referral.transaction.json", wire.body)
    doc = orjson.loads(wire.body)
    assert _validate_all(doc) == ["Bundle", "Patient", "ServiceRequest", "Task"]
    assert doc["type"] == "transaction" and doc["identifier"]["value"] == str(REFERRAL.message_id)
    patient, request, task = (e["resource"] for e in doc["entry"])
    assert request["identifier"] == [{"system": REFERRAL_ID_SYSTEM, "value": "REF-H-1"}]
    assert request["code"]["coding"][0]["system"] == SERVICE_SYSTEM
    assert request["code"]["coding"][0]["code"] == "phc-attachment"
    assert request["subject"]["reference"] == doc["entry"][0]["fullUrl"]
    assert task["basedOn"][0]["reference"] == doc["entry"][1]["fullUrl"] and task["status"] == "requested"
    assert task["groupIdentifier"] == {"system": CASE_ID_SYSTEM, "value": "KRG-2026-000123"}
    assert request["authoredOn"] == "2026-03-02T09:15:00+05:00" and doc["timestamp"] == NOW.isoformat()
    assert "Қарағанды, адаптация орталығы".encode() in wire.body  # UTF-8 as is, not \\u-escaped
    assert _encode(REFERRAL).body == wire.body  # pure: same message and clock, same bytes
    later = ADAPTER.encode(REFERRAL, mappings=MAPPINGS, instance=INSTANCE,
                           context=EncodeContext(now=datetime(2026, 3, 2, 5, 0, tzinfo=timezone.utc), case=CASE))
    retried = orjson.loads(later.body)  # a retry: only the Bundle timestamp moves, resource ids stay
    assert retried["timestamp"] != doc["timestamp"]
    assert [e["fullUrl"] for e in retried["entry"]] == [e["fullUrl"] for e in doc["entry"]]
    assert retried["entry"] == doc["entry"] and retried["identifier"] == doc["identifier"]


@pytest.mark.parametrize("kind,code", [("health.attachment", "phc-attachment"), ("health.screening", "screening"),
                                       ("psych.support", "psych-support")])
def test_every_medical_kind_encodes_to_valid_fhir(kind: str, code: str) -> None:
    samples = SampleCases(seed=11, now=NOW)
    case = parse_message(samples.case()[0])
    assert isinstance(case, CaseRegistered)
    referral = parse_message({"message_id": str(uuid.uuid4()), "type": "referral.requested", "case_id": case.case_id,
                              "occurred_at": "2026-03-02T09:15:00+05:00",
                              "body": {"referral_id": f"REF-{kind}", "kind": kind}})
    wire = _encode(referral, case)
    doc = orjson.loads(wire.body)
    assert _validate_all(doc) == ["Bundle", "Patient", "ServiceRequest", "Task"]
    assert doc["entry"][1]["resource"]["code"]["coding"][0]["code"] == code
    assert "supportingInfo" not in doc["entry"][1]["resource"] and "note" not in doc["entry"][1]["resource"]
    assert person_from_patient(doc["entry"][0]["resource"]) == case.body.person.model_dump(mode="json",
                                                                                           exclude_none=True)
    iin = case.body.person.iin
    assert iin not in wire.path and all(iin not in v for _, v in wire.headers)


# Whatever the canonical model takes: printable ids and names (no control, zero-width or bidi character).
_name = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda t: t.strip() == t and t != "" and re.match(PRINTABLE, t) is not None)


@settings(max_examples=150, deadline=None)
@given(surname=_name, given_name=_name, patronymic=st.none() | _name, case_id=_name, referral_id=_name,
       risk_id=st.none() | _name, details=st.none() | st.dictionaries(_name, _name | st.integers(), max_size=3),
       kind=st.sampled_from(["health.attachment", "health.screening", "psych.support"]))
def test_whatever_canonical_input_encodes_to_valid_fhir(surname: str, given_name: str, patronymic: str | None,
                                                        case_id: str, referral_id: str, risk_id: str | None,
                                                        details: dict | None, kind: str) -> None:
    person = {**PERSON, "surname": surname, "given_name": given_name, "patronymic": patronymic}
    case = parse_message({**CASE.model_dump(mode="json"), "case_id": case_id,
                          "body": {"region": "KZ-71", "person": {k: v for k, v in person.items() if v is not None}}})
    referral = parse_message({**REFERRAL.model_dump(mode="json"), "case_id": case_id,
                              "body": {"referral_id": referral_id, "kind": kind, "risk_id": risk_id,
                                       "details": details}})
    strict = HealthAdapter(validate_outgoing=True)  # validates the Bundle it builds, raising WireDecodeError
    wire = strict.encode(referral, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW, case=case))
    doc = orjson.loads(wire.body)
    assert _validate_all(doc) == ["Bundle", "Patient", "ServiceRequest", "Task"]
    assert person_from_patient(doc["entry"][0]["resource"]) == case.body.person.model_dump(mode="json",
                                                                                           exclude_none=True)
    task = doc["entry"][2]["resource"]
    assert task["groupIdentifier"]["value"] == case.case_id
    assert task["basedOn"][0]["identifier"]["value"] == referral.body.referral_id


def test_kazakh_names_round_trip_byte_exact() -> None:
    names = PERSON["surname"] + PERSON["given_name"] + PERSON["patronymic"]
    assert all(letter in names.lower() for letter in KAZAKH)  # the test data covers every letter
    wire = _encode(REFERRAL)
    for key in ("surname", "given_name", "patronymic"):
        assert PERSON[key].encode("utf-8") in wire.body
    assert b"\\u" not in wire.body
    patient = orjson.loads(wire.body)["entry"][0]["resource"]
    assert person_from_patient(patient) == PERSON
    assert patient["name"][0]["given"] == [PERSON["given_name"], PERSON["patronymic"]]


def test_encode_refuses_what_the_registries_do_not_take() -> None:
    plan = parse_message({"message_id": str(uuid.uuid4()), "type": "plan.approved", "case_id": "KRG-2026-000123",
                          "occurred_at": "2026-03-02T09:15:00+05:00", "body": {"plan_id": "P"}})
    with pytest.raises(WireDecodeError, match="no plan.approved"):
        _encode(plan)
    with pytest.raises(WireDecodeError, match="registration"):
        _encode(REFERRAL, case=None)
    other = CASE.model_copy(update={"case_id": "KRG-2026-999999"})
    with pytest.raises(WireDecodeError, match="another case"):
        _encode(REFERRAL, case=other)
    shelter = REFERRAL.model_copy(update={"body": REFERRAL.body.model_copy(update={"kind": "shelter.placement"})})
    with pytest.raises(WireDecodeError, match="health.service"):
        _encode(shelter)


# --- decode -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status,expected", [("accepted", "referral.accepted"), ("rejected", "referral.rejected")])
def test_decision_decodes(status: str, expected: str) -> None:
    extra = {"statusReason": {"text": "Пациентка уже прикреплена к другой организации ПМСП"}} if status == "rejected" \
        else {}
    body = orjson.dumps(_decision(status, **extra))
    check_golden("health", f"decision.{status}.json", body)
    (reply,) = _decode_response(body)
    check_golden("health", f"decision.{status}.canonical.json", reply.to_json())
    assert reply.type == expected and reply.body.referral_id == "REF-H-1" and reply.case_id == REFERRAL.case_id
    assert reply.message_id == derived_message_id(REFERRAL.message_id, expected)  # a retry yields the same id
    assert reply.occurred_at == datetime.fromisoformat("2026-03-02T09:20:00+05:00")
    if expected == "referral.rejected":
        assert reply.body.reason == "Пациентка уже прикреплена к другой организации ПМСП"


def test_undecided_task_makes_no_reply() -> None:
    assert _decode_response(orjson.dumps(_decision("received"))) == []
    assert _decode_callback(orjson.dumps(_completed_task(status="in-progress"))) == []


def test_completion_callback_decodes_with_kazakh_text_byte_exact() -> None:
    outcome = f"Прикреплена: {CLINICS[0][1]}; {KAZAKH.upper()}"
    body = orjson.dumps(_completed_task(outcome))
    check_golden("health", "callback.completed.json", body)
    (msg,) = _decode_callback(body)
    check_golden("health", "callback.completed.canonical.json", msg.to_json())
    assert msg.type == "referral.completed" and msg.case_id == "KRG-2026-000123"
    assert msg.body.referral_id == "REF-H-1" and msg.body.outcome == outcome
    assert msg.to_json().count(outcome.encode()) == 1
    assert msg.message_id == derived_message_id(f"health/Task/{TASK_ID}", "referral.completed")
    assert _decode_callback(body)[0].message_id == msg.message_id  # a repeated notification is the same message
    rejected = _completed_task(status="rejected", statusReason={"text": "Пациентка не явилась"})
    (msg2,) = _decode_callback(orjson.dumps(rejected))
    assert msg2.type == "referral.rejected" and msg2.body.reason == "Пациентка не явилась"
    assert msg2.message_id != msg.message_id


def _outcome_doc() -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "business-rule", "details": {"coding": [{"code": "DUPLICATE"}]},
        "diagnostics": f"пациент {PERSON['surname']} {PERSON['iin']} уже направлен",
        "expression": [f"Patient.identifier.where(value = '{PERSON['iin']}')"]}]}


def _bad_responses() -> dict[str, bytes]:
    no_task = _decision("accepted")
    no_task["entry"] = no_task["entry"][:2]
    failed = _decision("accepted")
    failed["entry"][0]["response"] = {"status": "409 Conflict", "outcome": _outcome_doc()}
    invalid = _decision("accepted")
    del invalid["entry"][2]["resource"]["intent"]
    return {
        "not-json": b"{not json",
        "not-an-object": b"[1, 2]",
        "not-fhir": b'{"status": "accepted"}',
        "unknown-type": b'{"resourceType": "Referral"}',
        "wrong-type": orjson.dumps({"resourceType": "Patient", "id": "p"}),
        "invalid-fhir": orjson.dumps(invalid),
        "operation-outcome": orjson.dumps(_outcome_doc()),
        "searchset": orjson.dumps({**_decision("accepted"), "type": "searchset"}),
        "no-task": orjson.dumps(no_task),
        "failed-entry": orjson.dumps(failed),
        "unknown-status": orjson.dumps(_decision("cancelled")),
        "another-referral": orjson.dumps(_decision("accepted", referral_id="REF-OTHER")),
        "rejected-without-reason": orjson.dumps(_decision("rejected")),
        "date-only": orjson.dumps(_decision("accepted", lastModified="2026-03-02")),
    }


@pytest.mark.parametrize("name", list(_bad_responses()))
def test_malformed_answers_are_refused_without_personal_data(name: str) -> None:
    with pytest.raises(WireDecodeError) as info:
        _decode_response(_bad_responses()[name])
    text = str(info.value)
    assert PERSON["iin"] not in text and PERSON["surname"] not in text
    if name in ("operation-outcome", "failed-entry"):
        assert "business-rule" in text and "DUPLICATE" in text  # the issue, without its free text
    if name == "unknown-status":
        assert "health.task_status" in text and "cancelled" in text


def test_operation_outcome_with_an_error_status_is_refused() -> None:
    with pytest.raises(WireDecodeError, match=r"OperationOutcome \(HTTP 422\)"):
        _decode_response(orjson.dumps(_outcome_doc()), status=422)


@pytest.mark.parametrize("change", [
    {"lastModified": "2026-03-03"}, {"groupIdentifier": None}, {"status": "bogus"}, {"basedOn": None},
    {"id": None}, {"status": "rejected"},
])
def test_malformed_callbacks_are_refused(change: dict[str, Any]) -> None:
    task = {k: v for k, v in {**_completed_task(), **change}.items() if v is not None}
    with pytest.raises(WireDecodeError):
        _decode_callback(orjson.dumps(task))


def test_a_callback_that_is_not_a_task_is_refused() -> None:
    with pytest.raises(WireDecodeError, match="expected a FHIR Task"):
        _decode_callback(orjson.dumps(_decision("completed")))


# --- lookups ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,path,param", [("osms_status", "/Coverage/_search", "beneficiary:Patient.identifier"),
                                             ("phc_attachment", "/Patient/_search", "identifier")])
def test_lookup_requests_keep_the_iin_out_of_the_url(kind: str, path: str, param: str) -> None:
    lookup = _lookup(kind, PERSON["iin"])
    wire = ADAPTER.encode_lookup(lookup, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))
    assert (wire.method, wire.path) == ("POST", path)
    assert wire.header("content-type") == "application/x-www-form-urlencoded"
    assert wire.header("x-request-id") == lookup.request_id
    assert PERSON["iin"] not in wire.path and all(PERSON["iin"] not in v for _, v in wire.headers)
    assert parse_qs(wire.body.decode())[param] == [f"{IIN_SYSTEM}|{PERSON['iin']}"]


def test_unknown_lookup_kind_is_refused() -> None:
    with pytest.raises(WireDecodeError, match="health.lookup"):
        ADAPTER.encode_lookup(_lookup("employment_status", PERSON["iin"]), mappings=MAPPINGS, instance=INSTANCE,
                              context=EncodeContext(now=NOW))


def _searchset(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "searchset", "timestamp": "2026-03-02T04:21:00+00:00",
                         "total": sum(1 for e in entries if e["search"]["mode"] == "match"), "entry": list(entries)})


def _patient_entry(iin: str, **extra: Any) -> dict[str, Any]:
    return {"fullUrl": "Patient/p-1", "search": {"mode": "match"}, "resource": {
        "resourceType": "Patient", "id": "p-1", "identifier": [{"system": IIN_SYSTEM, "value": iin}], **extra}}


def test_lookups_decode_from_golden_searchsets() -> None:
    iin = PERSON["iin"]
    coverage = {"fullUrl": "Coverage/c-1", "search": {"mode": "match"}, "resource": {
        "resourceType": "Coverage", "id": "c-1", "status": "active",
        "type": {"coding": [{"system": "https://probation-gateway.kz/fhir/CodeSystem/coverage-type", "code": "osms"}]},
        "beneficiary": {"reference": "Patient/p-1"}, "payor": [{"display": "ФСМС"}],
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
        "class": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                                        "code": "class"}]}, "value": "state-paid"}]}}
    osms = _searchset(coverage, {**_patient_entry(iin), "search": {"mode": "include"}})
    check_golden("health", "lookup.osms.searchset.json", osms)
    result = ADAPTER.decode_lookup(WireResponse(200, (), osms), mappings=MAPPINGS, lookup=_lookup("osms_status", iin),
                                   context=DecodeContext(received_at=NOW))
    assert result.found and result.record_kind == "osms_status"
    assert result.data == {"status": "insured", "category": "state_paid", "valid_from": "2026-01-01",
                           "valid_until": "2026-12-31"}
    assert result.as_of == datetime(2026, 3, 2, 4, 21, tzinfo=timezone.utc)

    org = {"fullUrl": "Organization/o-1", "search": {"mode": "include"}, "resource": {
        "resourceType": "Organization", "id": "o-1", "name": CLINICS[0][1],
        "identifier": [{"system": "https://probation-gateway.kz/fhir/sid/bin", "value": CLINICS[0][0]}]}}
    since = {"url": "https://probation-gateway.kz/fhir/StructureDefinition/phc-attachment-start",
             "valueDate": "2024-05-01"}
    gp = [{"reference": "Organization/o-1", "extension": [since]}]
    phc = _searchset(_patient_entry(iin, generalPractitioner=gp), org)
    check_golden("health", "lookup.phc.searchset.json", phc)
    result = ADAPTER.decode_lookup(WireResponse(200, (), phc), mappings=MAPPINGS, lookup=_lookup("phc_attachment", iin),
                                   context=DecodeContext(received_at=NOW))
    assert result.found and result.data == {"attached": True, "clinic_name": CLINICS[0][1], "clinic_bin": CLINICS[0][0],
                                            "attached_since": "2024-05-01"}
    assert result.data["clinic_name"].encode() in phc  # Kazakh name byte-exact

    empty = ADAPTER.decode_lookup(WireResponse(200, (), _searchset()), mappings=MAPPINGS,
                                  lookup=_lookup("phc_attachment", iin), context=DecodeContext(received_at=NOW))
    assert not empty.found and empty.data == {}


def test_lookup_answers_that_cannot_be_trusted_are_refused() -> None:
    iin, other = PERSON["iin"], "900101300017"
    cases = {
        "another patient": (200, _searchset(_patient_entry(other))),
        "2 patients": (200, _searchset(_patient_entry(iin), {**_patient_entry(iin), "fullUrl": "Patient/p-2"})),
        "OperationOutcome": (400, orjson.dumps(_outcome_doc())),
        "HTTP 500": (500, b""),
        "searchset": (200, orjson.dumps({"resourceType": "Bundle", "type": "collection"})),
    }
    for what, (status, body) in cases.items():
        with pytest.raises(WireDecodeError, match=what) as info:
            ADAPTER.decode_lookup(WireResponse(status, (), body), mappings=MAPPINGS,
                                  lookup=_lookup("phc_attachment", iin), context=DecodeContext(received_at=NOW))
        assert iin not in str(info.value) and other not in str(info.value)


# --- over real HTTP: codec <-> simulator <-> callback receiver --------------------------------------------------


class Receiver:
    """A stand-in for the gateway's /v1/inbound/health: keeps what arrives."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/v1/inbound/health")
        async def inbound(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.bodies.append((request.headers.get("content-type", ""), body))
            return Response(status_code=202)

    def for_referral(self, referral_id: str) -> list[dict[str, Any]]:
        with self.lock:
            docs = [orjson.loads(b) for _, b in self.bodies]
        return [d for d in docs if d["basedOn"][0]["identifier"]["value"] == referral_id]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ThreadServer, Receiver]]:
    receiver = Receiver()
    inbound = ThreadServer(receiver.app).start()
    sim = ThreadServer(create_app(name="health", callback_url=f"{inbound.url}/v1/inbound/health")).start()
    try:
        yield sim, receiver
    finally:
        sim.stop()
        inbound.stop()


def _post(sim: ThreadServer, wire: WireRequest) -> WireResponse:
    r = httpx.post(sim.url + wire.path, content=wire.body, headers=list(wire.headers), timeout=10)
    return WireResponse(r.status_code, tuple(r.headers.multi_items()), r.content)


def _sample_referral(kind: str, **details: Any) -> tuple[CaseRegistered, Any]:
    case = parse_message(SampleCases(seed=sum(map(ord, kind)), now=NOW).case()[0])
    assert isinstance(case, CaseRegistered)
    referral = parse_message({"message_id": str(uuid.uuid4()), "type": "referral.requested", "case_id": case.case_id,
                              "occurred_at": "2026-03-02T09:15:00+05:00",
                              "body": {"referral_id": f"REF-{uuid.uuid4().hex[:8]}", "kind": kind,
                                       **({"details": details} if details else {})}})
    return case, referral


@pytest.mark.parametrize("kind", ["health.attachment", "health.screening", "psych.support"])
def test_referral_over_http_is_accepted_then_completed(servers: tuple[ThreadServer, Receiver], kind: str) -> None:
    sim, receiver = servers
    case, referral = _sample_referral(kind)
    response = _post(sim, _encode(referral, case))
    assert response.status == 200, response.body
    _validate_all(orjson.loads(response.body))
    (reply,) = ADAPTER.decode_response(response, mappings=MAPPINGS, request=referral,
                                       context=DecodeContext(received_at=NOW))
    assert reply.type == "referral.accepted" and reply.body.referral_id == referral.body.referral_id
    assert reply.message_id == derived_message_id(referral.message_id, "referral.accepted")

    (task,) = wait_for(lambda: receiver.for_referral(referral.body.referral_id), timeout=10, what="the callback")
    validate_resource(task, expected="Task")
    with receiver.lock:
        content_type = next(ct for ct, b in receiver.bodies if referral.body.referral_id.encode() in b)
    assert content_type == FHIR_JSON
    (done,) = ADAPTER.decode_callback(WireRequest("POST", "/v1/inbound/health", (), orjson.dumps(task)),
                                      mappings=MAPPINGS, context=DecodeContext(received_at=NOW))
    assert done.type == "referral.completed" and done.case_id == case.case_id
    assert done.body.referral_id == referral.body.referral_id and done.body.outcome
    assert task["for"]["reference"] == f"Patient/{registry_patient_id(case.body.person.iin)}"

    received = httpx.get(f"{sim.url}/_sim/received").json()
    sent = next(d for d in received if d.get("identifier", {}).get("value") == str(referral.message_id))
    assert person_from_patient(sent["entry"][0]["resource"]) == case.body.person.model_dump(mode="json",
                                                                                           exclude_none=True)


def test_kazakh_names_arrive_byte_exact_at_the_registry(servers: tuple[ThreadServer, Receiver]) -> None:
    sim, _ = servers
    referral = REFERRAL.model_copy(update={"message_id": uuid.uuid4()})
    wire = _encode(referral)
    assert _post(sim, wire).status == 200
    received = httpx.get(f"{sim.url}/_sim/received")
    sent = next(d for d in received.json() if d.get("identifier", {}).get("value") == str(referral.message_id))
    assert person_from_patient(sent["entry"][0]["resource"]) == PERSON
    for key in ("surname", "given_name", "patronymic"):
        assert PERSON[key].encode() in received.content


def test_rejection_over_http_and_no_callback(servers: tuple[ThreadServer, Receiver]) -> None:
    sim, receiver = servers
    case, referral = _sample_referral("psych.support", simulate="reject")
    response = _post(sim, _encode(referral, case))
    (reply,) = ADAPTER.decode_response(response, mappings=MAPPINGS, request=referral,
                                       context=DecodeContext(received_at=NOW))
    assert reply.type == "referral.rejected" and "отклонено" in reply.body.reason
    case2, accepted = _sample_referral("health.screening")
    _post(sim, _encode(accepted, case2))  # its callback comes after the rejected one would have
    wait_for(lambda: receiver.for_referral(accepted.body.referral_id), timeout=10, what="the later callback")
    assert receiver.for_referral(referral.body.referral_id) == []


def test_a_repeated_transaction_gets_the_first_answer(servers: tuple[ThreadServer, Receiver]) -> None:
    sim, receiver = servers
    case, referral = _sample_referral("health.screening")
    wire = _encode(referral, case)
    first, second = _post(sim, wire), _post(sim, wire)
    assert first.status == second.status == 200 and first.body == second.body
    stats = httpx.get(f"{sim.url}/_sim/stats").json()
    assert len(stats["attempts"][str(referral.message_id)]) == 2
    assert str(referral.message_id) not in stats["processed_twice"]
    wait_for(lambda: receiver.for_referral(referral.body.referral_id), timeout=10, what="the callback")
    assert len(receiver.for_referral(referral.body.referral_id)) == 1


def test_the_simulator_answers_invalid_fhir_with_an_operation_outcome(servers: tuple[ThreadServer, Receiver]) -> None:
    sim, _ = servers
    for change, code in [(lambda r: r.update(gender=["female"]), "invalid"),
                         (lambda r: r["identifier"][0].update(value="900101300018"), "value")]:
        doc = orjson.loads(_encode(REFERRAL.model_copy(update={"message_id": uuid.uuid4()})).body)
        change(doc["entry"][0]["resource"])
        r = httpx.post(f"{sim.url}/", content=orjson.dumps(doc), headers={"content-type": FHIR_JSON})
        assert r.status_code == 422
        outcome = validate_resource(r.json(), expected="OperationOutcome")
        assert outcome["issue"][0]["code"] == code
        assert "900101300018" not in r.text and "female" not in r.text
        with pytest.raises(WireDecodeError, match=f"error {code}"):
            _decode_response(r.content, status=r.status_code)
    doc = orjson.loads(_encode(REFERRAL.model_copy(update={"message_id": uuid.uuid4()})).body)
    doc["entry"][1]["resource"]["code"]["coding"][0]["code"] = "x-ray"
    r = httpx.post(f"{sim.url}/", content=orjson.dumps(doc), headers={"content-type": FHIR_JSON})
    assert r.status_code == 422 and r.json()["issue"][0]["code"] == "code-invalid"
    assert httpx.post(f"{sim.url}/", content=b"{}").status_code == 400


@pytest.mark.parametrize("serial,kind,found,data", [
    (3, "osms_status", False, {}),
    (1, "osms_status", True, {"status": "insured", "category": "state_paid", "valid_from": "2026-01-01",
                              "valid_until": "2026-12-31"}),
    (2, "osms_status", True, {"status": "not_insured", "category": "employee", "valid_from": "2024-01-01",
                              "valid_until": "2025-06-30"}),
    (4, "phc_attachment", False, {}),
    (5, "phc_attachment", True, {"attached": False}),
    (6, "phc_attachment", True, {"attached": True, "clinic_name": CLINICS[0][1], "clinic_bin": CLINICS[0][0],
                                 "attached_since": "2020-01-07"}),
    (7, "phc_attachment", True, {"attached": True, "clinic_name": CLINICS[1][1], "clinic_bin": CLINICS[1][0],
                                 "attached_since": "2020-01-08"}),
])
def test_lookups_end_to_end(servers: tuple[ThreadServer, Receiver], serial: int, kind: str, found: bool,
                            data: dict[str, object]) -> None:
    sim, _ = servers
    lookup = RecordLookup(request_id=str(uuid.uuid4()), record_kind=kind, iin=_iin(serial), purpose="ИПР")
    wire = ADAPTER.encode_lookup(lookup, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))
    response = _post(sim, wire)
    assert response.status == 200, response.body
    _validate_all(orjson.loads(response.body))
    result = ADAPTER.decode_lookup(response, mappings=MAPPINGS, lookup=lookup, context=DecodeContext(received_at=NOW))
    assert (result.found, result.data) == (found, data)
    assert result.as_of.tzinfo is not None


def test_the_simulator_refuses_an_iin_in_the_url(servers: tuple[ThreadServer, Receiver]) -> None:
    sim, _ = servers
    r = httpx.post(f"{sim.url}/Patient/_search?identifier={IIN_SYSTEM}|{_iin(6)}", content=b"",
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["issue"][0]["code"] == "security"
    r = httpx.post(f"{sim.url}/Patient/_search", content=f"identifier=x|{_iin(6)}".encode(),
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
