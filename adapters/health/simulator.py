"""A health-registry simulator speaking HL7 FHIR R4 JSON: takes referral transactions, answers two searches, and
later POSTs the completed Task to the gateway.

- `POST /` takes a `transaction` Bundle (Patient + ServiceRequest + Task, see adapters/health/README.md),
  checks every resource with fhir.resources (422 + OperationOutcome when one is invalid), and answers 200 with a
  `transaction-response` whose Task is `accepted`, or `rejected` when a ServiceRequest note reads
  `simulate: reject` (a referral whose `details` has `"simulate": "reject"`). An accepted Task is completed
  later: the Task, status `completed`, is POSTed to the callback URL.
- `POST /Coverage/_search` and `POST /Patient/_search` take the IIN in a form body (an identifier in the URL is
  refused with 400) and answer a `searchset` derived from the IIN alone, so tests know what to expect:
  with s = the IIN's serial (digits 8-11) as a number,
  ОСМС (`osms_record`): s % 3 == 0 no Coverage; 1 insured (`active`, category `state-paid`, 2026);
  2 not insured (`cancelled`, category `employee`, ended 2025-06-30);
  ПМСП (`phc_record`): s % 4 == 0 no Patient; 1 a Patient attached nowhere; 2 and 3 attached to CLINICS[s % 4 - 2]
  since 2020-01-01 + s days.
Faults and repeats are keyed by the Bundle identifier (the canonical message id) for transactions and by the
`x-request-id` header for searches.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI, Request, Response

from adapters.health.codec import (
    BIN_SYSTEM,
    CASE_ID_SYSTEM,
    COVERAGE_CLASS_SYSTEM,
    COVERAGE_TYPE_SYSTEM,
    FHIR_JSON,
    FORM,
    IIN_PARAM,
    IIN_SYSTEM,
    MESSAGE_ID_SYSTEM,
    OUTCOME_CODE,
    PHC_ATTACHED_SINCE_URL,
    REFERRAL_ID_SYSTEM,
    SERVICE_SYSTEM,
    TASK_OUTPUT_SYSTEM,
    validate_resource,
)
from adapters.simulation import SimSigner, answer, apply_faults, repeat, simulator_app
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.iin import is_valid_iin

SIM_NAMESPACE = uuid.UUID("4a0c9d55-8f2e-4b7a-b0c3-6d1e2f3a4b5c")  # the simulated registry's own resource ids
REJECT_NOTE = "simulate: reject"
REGISTRY = "РЦЭЗ: регистр прикреплённого населения (симулятор)"
FUND = "НАО «Фонд социального медицинского страхования»"
CLINICS = [
    ("990140000011", "«Қарағанды қаласының №1 емханасы» ШЖҚ КМК"),
    ("990240000028", "«Астана қаласының №4 қалалық емханасы» ШЖҚ МКК"),
]
SERVICES = {  # the registry's catalogue: service code -> what a completed Task says
    "phc-attachment": "Пациент прикреплён к организации ПМСП",
    "screening": "Скрининговое обследование проведено",
    "psych-support": "Консультации психолога проведены, курс завершён",
}
OSMS_CATEGORIES = {"state-paid": "Льготная категория: взносы платит государство", "employee": "Наёмный работник"}


def _serial(iin: str) -> int:
    return int(iin[7:11])


def registry_patient_id(iin: str) -> str:
    return str(uuid.uuid5(SIM_NAMESPACE, f"Patient/{iin}"))


def osms_record(iin: str) -> dict[str, Any] | None:
    """The ОСМС Coverage the simulated Fund holds for an IIN (None: no record), derived from its serial."""
    s = _serial(iin) % 3
    if s == 0:
        return None
    if s == 1:
        return {"status": "active", "category": "state-paid", "start": "2026-01-01", "end": "2026-12-31"}
    return {"status": "cancelled", "category": "employee", "start": "2024-01-01", "end": "2025-06-30"}


def phc_record(iin: str) -> dict[str, Any] | None:
    """The ПМСП attachment the simulated registry holds (None: no such patient), derived from the IIN's serial."""
    s = _serial(iin)
    if s % 4 == 0:
        return None
    if s % 4 == 1:
        return {"attached": False}
    bin_, name = CLINICS[s % 4 - 2]
    return {"attached": True, "clinic_bin": bin_, "clinic_name": name,
            "attached_since": (date(2020, 1, 1) + timedelta(days=s)).isoformat()}


def _patient(iin: str) -> dict[str, Any]:
    century = {"1": 1800, "2": 1800, "3": 1900, "4": 1900, "5": 2000, "6": 2000}.get(iin[6], 1900)
    return {
        "resourceType": "Patient",
        "id": registry_patient_id(iin),
        "identifier": [{"use": "official", "system": IIN_SYSTEM, "value": iin}],
        "gender": "male" if int(iin[6]) % 2 else "female",
        "birthDate": f"{century + int(iin[:2]):04d}-{iin[2:4]}-{iin[4:6]}",
    }


def outcome(status: int, code: str, diagnostics: str, expression: list[str] | None = None) -> Response:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return Response(orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]}), status_code=status,
                    media_type=FHIR_JSON)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _check_transaction(doc: dict[str, Any]) -> tuple[str, str, list[str]] | dict[str, Any]:
    """The parts of a valid referral transaction, or (code, diagnostics, expression) of the first problem."""
    try:
        validate_resource(doc, expected="Bundle")
    except WireDecodeError as exc:
        return "invalid", str(exc), ["Bundle"]
    if doc.get("type") != "transaction":
        return "not-supported", "only transaction Bundles are taken here", ["Bundle.type"]
    parts: dict[str, Any] = {}
    for i, entry in enumerate(doc.get("entry") or []):
        resource = entry.get("resource") or {}
        rtype = resource.get("resourceType")
        if rtype not in ("Patient", "ServiceRequest", "Task") or rtype in parts:
            return "not-supported", "a referral is one Patient, one ServiceRequest and one Task", [f"Bundle.entry[{i}]"]
        if (entry.get("request") or {}).get("method") != "POST" or not entry.get("fullUrl"):
            return "invalid", "each entry is created with POST and has a fullUrl", [f"Bundle.entry[{i}].request"]
        parts[rtype] = entry
    if set(parts) != {"Patient", "ServiceRequest", "Task"}:
        return "required", "a referral is one Patient, one ServiceRequest and one Task", ["Bundle.entry"]
    patient, request, task = (parts[k]["resource"] for k in ("Patient", "ServiceRequest", "Task"))
    iin = next((i.get("value") for i in patient.get("identifier") or [] if i.get("system") == IIN_SYSTEM), None)
    if not iin or not is_valid_iin(str(iin)):
        return "value", f"the Patient needs a valid IIN in {IIN_SYSTEM}", ["Patient.identifier"]
    referral = next((i.get("value") for i in request.get("identifier") or [] if i.get("system") == REFERRAL_ID_SYSTEM),
                    None)
    if not referral:
        return "required", f"the ServiceRequest needs an identifier in {REFERRAL_ID_SYSTEM}", \
            ["ServiceRequest.identifier"]
    codings = (request.get("code") or {}).get("coding") or []
    codes = [c.get("code") for c in codings if c.get("system") == SERVICE_SYSTEM]
    if not codes or codes[0] not in SERVICES:
        return "code-invalid", f"the ServiceRequest code is not in this registry's catalogue ({SERVICE_SYSTEM})", \
            ["ServiceRequest.code"]
    if (request.get("subject") or {}).get("reference") != parts["Patient"]["fullUrl"]:
        return "invalid", "the ServiceRequest subject must be the Patient of the Bundle", ["ServiceRequest.subject"]
    if not any((b or {}).get("reference") == parts["ServiceRequest"]["fullUrl"] for b in task.get("basedOn") or []):
        return "invalid", "the Task must be based on the ServiceRequest of the Bundle", ["Task.basedOn"]
    case_id = (task.get("groupIdentifier") or {}).get("value")
    if (task.get("groupIdentifier") or {}).get("system") != CASE_ID_SYSTEM or not case_id:
        return "required", f"the Task needs a groupIdentifier in {CASE_ID_SYSTEM}", ["Task.groupIdentifier"]
    return {"iin": str(iin), "referral": str(referral), "service": codes[0], "case_id": str(case_id),
            "reject": any(n.get("text") == REJECT_NOTE for n in request.get("note") or [])}


def create_app(*, name: str = "health", callback_url: str = "http://127.0.0.1:8080/v1/inbound/health", signer: SimSigner | None = None) -> FastAPI:
    app, state, sender = simulator_app("Health registry simulator", name=name, callback_url=callback_url, signer=signer)

    @app.post("/")
    async def transaction(request: Request) -> Response:
        body = await request.body()
        try:
            doc = orjson.loads(body)
            key = str(doc["identifier"]["value"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return outcome(400, "structure", f"expected a FHIR Bundle with an identifier in {MESSAGE_ID_SYSTEM}")
        fault = await apply_faults(state, key, media_type=FHIR_JSON)
        if fault is not None:
            return fault
        if (again := repeat(state, key, FHIR_JSON)) is not None:
            return again
        state.processed[key] = state.processed.get(key, 0) + 1
        state.received.append(doc)
        checked = _check_transaction(doc)
        if isinstance(checked, tuple):
            code, diagnostics, expression = checked
            error = outcome(422, code, diagnostics, expression)
            return answer(state, key, 422, bytes(error.body), FHIR_JSON)
        now = _now()
        patient_id = registry_patient_id(checked["iin"])
        request_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
        task: dict[str, Any] = {
            "resourceType": "Task",
            "id": task_id,
            "meta": {"versionId": "1", "lastUpdated": now},
            "basedOn": [{"reference": f"ServiceRequest/{request_id}",
                         "identifier": {"system": REFERRAL_ID_SYSTEM, "value": checked["referral"]}}],
            "groupIdentifier": {"system": CASE_ID_SYSTEM, "value": checked["case_id"]},
            "status": "accepted",
            "intent": "order",
            "focus": {"reference": f"ServiceRequest/{request_id}"},
            "for": {"reference": f"Patient/{patient_id}"},
            "lastModified": now,
            "owner": {"display": REGISTRY},
        }
        if checked["reject"]:
            task["status"] = "rejected"
            task["statusReason"] = {"text": "Направление отклонено: услуга недоступна (имитация отказа)"}
        created = {"status": "201 Created", "lastModified": now}
        out = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": "transaction-response",
            "timestamp": now,
            "entry": [
                {"response": {**created, "location": f"Patient/{patient_id}/_history/1"}},
                {"response": {**created, "location": f"ServiceRequest/{request_id}/_history/1"}},
                {"fullUrl": f"Task/{task_id}", "resource": task,
                 "response": {**created, "location": f"Task/{task_id}/_history/1"}},
            ],
        }
        if task["status"] == "accepted":
            completed_at = _now()
            done = {**task, "meta": {"versionId": "2", "lastUpdated": completed_at}, "status": "completed",
                    "lastModified": completed_at,
                    "output": [{"type": {"coding": [{"system": TASK_OUTPUT_SYSTEM, "code": OUTCOME_CODE}]},
                                "valueString": _completion_text(checked)}]}
            sender.schedule(orjson.dumps(done), {"content-type": FHIR_JSON})
        return answer(state, key, 200, orjson.dumps(out), FHIR_JSON)

    async def _search(request: Request, rtype: str) -> Response | tuple[str, str]:
        key = request.headers.get("x-request-id") or str(uuid.uuid4())
        if "identifier" in request.url.query.lower():
            return outcome(400, "security", "identifiers are personal data: send them in the form body, not the URL")
        if (request.headers.get("content-type") or "").split(";")[0].strip() != FORM:
            return outcome(400, "not-supported", f"search with POST and a {FORM} body")
        fault = await apply_faults(state, key, media_type=FHIR_JSON)
        if fault is not None:
            return fault
        if (again := repeat(state, key, FHIR_JSON)) is not None:
            return again
        state.processed[key] = state.processed.get(key, 0) + 1
        params = parse_qs((await request.body()).decode("utf-8", "replace"))
        values = params.get(IIN_PARAM[rtype]) or []
        system, _, iin = (values[0] if len(values) == 1 else "").partition("|")
        if system != IIN_SYSTEM or not is_valid_iin(iin):
            error = outcome(400, "value", f"search by exactly one {IIN_PARAM[rtype]}={IIN_SYSTEM}|<valid IIN>")
            return answer(state, key, 400, bytes(error.body), FHIR_JSON)
        state.received.append({"search": rtype, "params": sorted(params)})  # parameter names only
        return key, iin

    def _searchset(key: str, entries: list[dict[str, Any]]) -> Response:
        doc = {"resourceType": "Bundle", "id": str(uuid.uuid5(SIM_NAMESPACE, f"search/{key}")), "type": "searchset",
               "timestamp": _now(), "total": sum(1 for e in entries if e["search"]["mode"] == "match"),
               "entry": entries}
        return answer(state, key, 200, orjson.dumps(doc), FHIR_JSON)

    @app.post("/Coverage/_search")
    async def coverage_search(request: Request) -> Response:
        got = await _search(request, "Coverage")
        if isinstance(got, Response):
            return got
        key, iin = got
        record = osms_record(iin)
        if record is None:
            return _searchset(key, [])
        patient = _patient(iin)
        coverage_id = str(uuid.uuid5(SIM_NAMESPACE, f"Coverage/{iin}"))
        coverage = {
            "resourceType": "Coverage",
            "id": coverage_id,
            "status": record["status"],
            "type": {"coding": [{"system": COVERAGE_TYPE_SYSTEM, "code": "osms",
                                 "display": "Обязательное социальное медицинское страхование"}]},
            "beneficiary": {"reference": f"Patient/{patient['id']}"},
            "period": {"start": record["start"], "end": record["end"]},
            "payor": [{"display": FUND}],
            "class": [{"type": {"coding": [{"system": COVERAGE_CLASS_SYSTEM, "code": "class"}]},
                       "value": record["category"], "name": OSMS_CATEGORIES[record["category"]]}],
        }
        return _searchset(key, [
            {"fullUrl": f"Coverage/{coverage_id}", "resource": coverage, "search": {"mode": "match"}},
            {"fullUrl": f"Patient/{patient['id']}", "resource": patient, "search": {"mode": "include"}},
        ])

    @app.post("/Patient/_search")
    async def patient_search(request: Request) -> Response:
        got = await _search(request, "Patient")
        if isinstance(got, Response):
            return got
        key, iin = got
        record = phc_record(iin)
        if record is None:
            return _searchset(key, [])
        patient = _patient(iin)
        entries = [{"fullUrl": f"Patient/{patient['id']}", "resource": patient, "search": {"mode": "match"}}]
        if record["attached"]:
            org_id = str(uuid.uuid5(SIM_NAMESPACE, f"Organization/{record['clinic_bin']}"))
            patient["generalPractitioner"] = [{
                "extension": [{"url": PHC_ATTACHED_SINCE_URL, "valueDate": record["attached_since"]}],
                "reference": f"Organization/{org_id}", "display": record["clinic_name"]}]
            entries.append({"fullUrl": f"Organization/{org_id}", "search": {"mode": "include"}, "resource": {
                "resourceType": "Organization", "id": org_id,
                "identifier": [{"system": BIN_SYSTEM, "value": record["clinic_bin"]}],
                "active": True, "name": record["clinic_name"]}})
        return _searchset(key, entries)

    return app


def _completion_text(checked: dict[str, Any]) -> str:
    text = SERVICES[checked["service"]]
    if checked["service"] == "phc-attachment":
        record = phc_record(checked["iin"]) or {}
        text += f": {record.get('clinic_name') or CLINICS[0][1]}"
    return text

