"""A МТСЗН simulator: registers referrals over REST/JSON, calls back when the track or contract starts, and
answers employment-status lookups.

Decisions: a citizen under 16 or 63 and over (on the simulator's today) is `refused` with `NOT_WORKING_AGE`;
everyone else is `registered`, and `callback_delay_ms` later the gateway gets `TRACK_STARTED` (employment
track) or `CONTRACT_SIGNED` (social contract), echoing the citizen's names as МТСЗН registered them.

Lookups are deterministic, read from the IIN's 11th digit (the last digit of its serial number):
0 not found; 1 UNEMPLOYED; 2 UNEMPLOYED on a social contract; 3 JOB_SEEKER; 4 IN_TRAINING on a social contract;
5 EMPLOYED; 6 SELF_EMPLOYED; 7 EMPLOYED; 8 JOB_SEEKER; 9 DEREGISTERED. The registration date and the
employment centre come from the serial's other digits (see `employment_record`).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime, timezone
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

from adapters.simulation import SimSigner, answer, apply_faults, repeat, simulator_app
from gateway.canonical.iin import is_valid_iin

SERVICES = {"EMPL_TRACK": "TRACK_STARTED", "SOC_CONTRACT": "CONTRACT_SIGNED"}
RESULT_TEXT = {
    "EMPL_TRACK": "Жұмыспен қамтудың жеке трегі басталды: кәсіптік оқытуға жіберілді",
    "SOC_CONTRACT": "Әлеуметтік келісімшарт жасалды: белсенді іс-шаралар жоспары бекітілді",
}
GENDERS = ("1", "2")
CENTRES = (
    "Қарағанды облысының жұмыспен қамту орталығы",
    "Астана қаласының жұмыспен қамту орталығы",
    "Алматы қаласының жұмыспен қамту орталығы",
)
# 11th IIN digit -> (status, on a social contract); None: МТСЗН has no record of the person.
STATUS_BY_DIGIT: dict[str, tuple[str, bool] | None] = {
    "0": None,
    "1": ("UNEMPLOYED", False),
    "2": ("UNEMPLOYED", True),
    "3": ("JOB_SEEKER", False),
    "4": ("IN_TRAINING", True),
    "5": ("EMPLOYED", False),
    "6": ("SELF_EMPLOYED", False),
    "7": ("EMPLOYED", False),
    "8": ("JOB_SEEKER", False),
    "9": ("DEREGISTERED", False),
}
WORKING_AGE = (16, 63)


class BadInput(Exception):
    """The request is not a valid МТСЗН request; the message names a field, never a person's data."""


def employment_record(iin: str) -> dict[str, Any] | None:
    """The simulated record for an IIN, the same every time."""
    entry = STATUS_BY_DIGIT[iin[10]]
    if entry is None:
        return None
    status, contract = entry
    serial = iin[7:11]
    return {
        "status": status,
        "registered_on": date(2025, 1 + int(serial[:2]) % 12, 1 + int(serial[2:]) % 28).isoformat(),
        "employment_centre": CENTRES[int(serial[0]) % len(CENTRES)],
        "social_contract": contract,
    }


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"field {name!r} is missing or not a string")
    return value


def _citizen(doc: dict[str, Any]) -> dict[str, Any]:
    citizen = doc.get("citizen")
    if not isinstance(citizen, dict):
        raise BadInput("field 'citizen' is missing or not an object")
    if not is_valid_iin(_str(citizen, "iin")):
        raise BadInput("citizen.iin is not a valid IIN")
    for name in ("last_name", "first_name"):
        _str(citizen, name)
    try:
        date.fromisoformat(_str(citizen, "birth_date"))
    except ValueError:
        raise BadInput("citizen.birth_date is not a date") from None
    if citizen.get("gender") not in GENDERS:
        raise BadInput("citizen.gender must be '1' or '2'")
    return citizen


def _bad(reason: str) -> bytes:
    return orjson.dumps({"error": "bad_request", "detail": reason})


def create_app(*, name: str = "mtszn", callback_url: str = "http://127.0.0.1:8080/v1/inbound/mtszn", signer: SimSigner | None = None) -> FastAPI:
    app, state, sender = simulator_app("МТСЗН simulator", name=name, callback_url=callback_url, signer=signer)

    async def _start(request: Request) -> tuple[dict[str, Any] | None, str, Response | None]:
        """Parse the body and take the request id; run the fault script and the duplicate check."""
        try:
            doc = orjson.loads(await request.body())
            if not isinstance(doc, dict):
                raise BadInput("expected a JSON object")
            request_id = _str(doc, "request_id")
        except (orjson.JSONDecodeError, BadInput) as exc:
            reason = str(exc) if isinstance(exc, BadInput) else "not JSON"
            return None, "", Response(_bad(reason), status_code=400, media_type="application/json")
        fault = await apply_faults(state, request_id)
        if fault is not None:
            return doc, request_id, fault
        if (again := repeat(state, request_id)) is not None:
            return doc, request_id, again
        return doc, request_id, None

    @app.post("/mtszn/api/v1/referrals")
    async def referrals(request: Request) -> Response:
        doc, request_id, early = await _start(request)
        if early is not None:
            return early
        assert doc is not None
        try:
            referral_no, case_ref = _str(doc, "referral_no"), _str(doc, "case_ref")
            service = _str(doc, "service_code")
            if service not in SERVICES:
                raise BadInput("unknown service_code")
            citizen = _citizen(doc)
            _str(doc, "region")
        except BadInput as exc:
            return answer(state, request_id, 400, _bad(str(exc)))
        state.processed[request_id] = state.processed.get(request_id, 0) + 1
        state.received.append(doc)
        now = datetime.now(timezone.utc)
        age = _age(date.fromisoformat(citizen["birth_date"]), now.date())
        if not WORKING_AGE[0] <= age < WORKING_AGE[1]:
            return answer(state, request_id, 200, orjson.dumps({
                "request_id": request_id, "referral_no": referral_no, "decision": "refused",
                "reason_code": "NOT_WORKING_AGE", "decided_at": now.isoformat(),
            }))
        registration_no = "EMP-" + hashlib.sha256(request_id.encode()).hexdigest()[:10].upper()
        body_out = orjson.dumps({
            "request_id": request_id, "referral_no": referral_no, "decision": "registered",
            "registration_no": registration_no, "decided_at": now.isoformat(),
        })
        echoed = {k: citizen[k] for k in ("last_name", "first_name", "middle_name") if k in citizen}
        sender.schedule(
            orjson.dumps({
                "event_id": str(uuid.uuid4()), "event_type": SERVICES[service], "referral_no": referral_no,
                "case_ref": case_ref, "service_code": service, "registration_no": registration_no,
                "occurred_at": datetime.now(timezone.utc).isoformat(), "result_text": RESULT_TEXT[service],
                "citizen": echoed, "region": doc["region"],
            }),
            {"content-type": "application/json; charset=utf-8"},
        )
        return answer(state, request_id, 201, body_out)

    @app.post("/mtszn/api/v1/employment-status/search")
    async def employment_status(request: Request) -> Response:
        doc, request_id, early = await _start(request)
        if early is not None:
            return early
        assert doc is not None
        try:
            if doc.get("record_type") != "EMPLOYMENT_STATUS":
                raise BadInput("record_type must be EMPLOYMENT_STATUS")
            iin = _str(doc, "iin")
            if not is_valid_iin(iin):
                raise BadInput("iin is not a valid IIN")
        except BadInput as exc:
            return answer(state, request_id, 400, _bad(str(exc)))
        state.processed[request_id] = state.processed.get(request_id, 0) + 1
        state.received.append({k: v for k, v in doc.items() if k != "iin"})  # the IIN is not kept
        record = employment_record(iin)
        out: dict[str, Any] = {"request_id": request_id, "record_type": "EMPLOYMENT_STATUS",
                               "found": record is not None, "as_of": datetime.now(timezone.utc).isoformat()}
        return answer(state, request_id, 200, orjson.dumps({**out, **(record or {})}))

    return app
