"""Pure codec between canonical messages and МТСЗН's REST/JSON API (employment centres).

Wire dialect (snake_case JSON, UTF-8 as is):

- `POST /mtszn/api/v1/referrals`: a referral (`request_id`, `referral_no`, `service_code`, `case_ref`,
  `risk_ref`?, `referral_date`, `sent_at`, `citizen` {`iin`, `last_name`, `first_name`, `middle_name`?,
  `birth_date`, `gender`}, `region` (the region's name), `details`?). The answer is the synchronous
  decision: `decision` `registered` (201) or `refused` (200, with `reason_code`), `decided_at`.
- callback to the gateway (`/v1/inbound/mtszn`): `event_id` (UUID, the canonical message id),
  `event_type` (`TRACK_STARTED`, `TRACK_COMPLETED`, `CONTRACT_SIGNED`, `CONTRACT_COMPLETED`,
  `REFERRAL_WITHDRAWN`), `referral_no`, `case_ref`, `occurred_at`, `service_code`?, `result_text`?,
  `reason_code` (withdrawn only).
- `POST /mtszn/api/v1/employment-status/search`: a record lookup; the IIN travels in the JSON body, never in
  the URL. Answer: `request_id`, `found`, `as_of`, and when found `status`, `registered_on`?,
  `employment_centre`?, `social_contract`?.

Every code goes through a `mtszn.*` table in mappings/codes/mtszn.yaml. Errors never quote an IIN or a name.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.canonical.errors import WireDecodeError
from gateway.canonical.iin import is_valid_iin
from gateway.canonical.messages import AnyMessage, parse_message
from gateway.mapping import Instance, Mappings
from gateway.pipeline.ports import (
    DecodeContext,
    EncodeContext,
    RecordLookup,
    RecordResult,
    SignatureChannel,
    WireRequest,
    WireResponse,
    derived_message_id,
)

REFERRALS_PATH = "/mtszn/api/v1/referrals"
STATUS_SEARCH_PATH = "/mtszn/api/v1/employment-status/search"
KINDS = frozenset({"employment.track", "social.contract"})

# Canonical meaning of each callback event (table mtszn.event): the reply type and, for a completion, the
# outcome used when the callback carries no `result_text`; the service the event belongs to.
EVENTS: dict[str, tuple[str, str | None, str]] = {
    "track.started": ("referral.completed", "employment track started", "employment.track"),
    "track.completed": ("referral.completed", "employment track completed", "employment.track"),
    "contract.signed": ("referral.completed", "social contract signed", "social.contract"),
    "contract.completed": ("referral.completed", "social contract completed", "social.contract"),
    "referral.withdrawn": ("referral.rejected", None, ""),
}
_MAX_CODE = 64


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:  # the message names a position, never the content
        raise WireDecodeError(f"МТСЗН {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WireDecodeError(f"МТСЗН {what}: expected a JSON object")
    return value


def _text(doc: dict[str, Any], name: str, what: str) -> str:
    value = doc.get(name)
    if value is None or value == "":
        raise WireDecodeError(f"МТСЗН {what}: missing field {name!r}")
    if not isinstance(value, str):
        raise WireDecodeError(f"МТСЗН {what}: field {name!r} must be a string")
    return value


def _optional_text(doc: dict[str, Any], name: str, what: str) -> str | None:
    if doc.get(name) in (None, ""):
        return None
    return _text(doc, name, what)


def _aware(value: str, name: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WireDecodeError(f"МТСЗН {what}: {name!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise WireDecodeError(f"МТСЗН {what}: {name!r} has no UTC offset")
    return parsed


def _message(data: dict[str, Any], what: str) -> AnyMessage:
    try:
        return parse_message(data)
    except ValidationError as exc:  # name the field and the rule, never the value
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise WireDecodeError(f"МТСЗН {what} does not make a valid canonical message: {problems}") from exc


def _dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def _reason(mappings: Mappings, code: str) -> str:
    table = mappings.table("mtszn.refusal_reason")
    reason = table.canonical(code)
    if code not in table.codes.values():  # read as the default: keep the counterpart's code for the record
        reason = f"{reason} (code {code[:_MAX_CODE]})"
    return reason


def _headers(message_id: str) -> tuple[tuple[str, str], ...]:
    return (
        ("content-type", "application/json; charset=utf-8"),
        ("accept", "application/json"),
        ("x-message-id", message_id),
    )


class MtsznAdapter:
    counterpart = "mtszn"
    signature_channel: SignatureChannel = "http"

    # -- referrals -------------------------------------------------------------------------------------

    def encode(
        self, message: AnyMessage, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest:
        if message.type != "referral.requested":
            raise WireDecodeError(f"МТСЗН takes no {message.type} messages")
        if message.body.kind not in KINDS:
            raise WireDecodeError(f"МТСЗН serves no referral kind {message.body.kind!r}")
        if context.case is None:
            raise WireDecodeError(f"МТСЗН needs the case's registration to refer case {message.case_id!r}")
        person = context.case.body.person
        citizen = {
            "iin": person.iin,
            "last_name": person.surname,
            "first_name": person.given_name,
            "middle_name": person.patronymic,
            "birth_date": person.birth_date.isoformat(),
            "gender": mappings.table("mtszn.sex").external(person.sex),
        }
        doc = {
            "request_id": str(message.message_id),
            "referral_no": message.body.referral_id,
            "service_code": mappings.table("mtszn.service").external(message.body.kind),
            "case_ref": message.case_id,
            "risk_ref": message.body.risk_id,
            "referral_date": message.occurred_at.isoformat(),
            "sent_at": context.now.isoformat(),
            "citizen": {k: v for k, v in citizen.items() if v is not None},
            "region": mappings.table("regions").external(context.case.body.region),
            "details": message.body.details or None,
        }
        return WireRequest("POST", REFERRALS_PATH, _headers(str(message.message_id)), _dumps(doc))

    def decode_response(
        self, response: WireResponse, *, mappings: Mappings, request: AnyMessage, context: DecodeContext
    ) -> list[AnyMessage]:
        what = "decision"
        if request.type != "referral.requested":
            raise WireDecodeError(f"МТСЗН was sent no {request.type} messages")
        doc = _json(response.body, what)
        if _text(doc, "request_id", what) != str(request.message_id):
            raise WireDecodeError("МТСЗН decision names another request_id")
        referral_no = _optional_text(doc, "referral_no", what)
        if referral_no is not None and referral_no != request.body.referral_id:
            raise WireDecodeError("МТСЗН decision names another referral_no")
        kind = mappings.table("mtszn.decision").canonical(_text(doc, "decision", what))
        decided_at = _optional_text(doc, "decided_at", what)
        body: dict[str, Any] = {"referral_id": request.body.referral_id}
        if kind == "referral.rejected":
            body["reason"] = _reason(mappings, _text(doc, "reason_code", what))
        return [_message({
            "message_id": str(derived_message_id(request.message_id, kind)),
            "type": kind,
            "case_id": request.case_id,
            "occurred_at": decided_at or context.received_at.isoformat(),
            "body": body,
        }, what)]

    def decode_callback(self, request: WireRequest, *, mappings: Mappings, context: DecodeContext) -> list[AnyMessage]:
        what = "callback"
        doc = _json(request.body, what)
        event = mappings.table("mtszn.event").canonical(_text(doc, "event_type", what))
        if event not in EVENTS:
            raise WireDecodeError(f"МТСЗН callback event {event!r} has no canonical meaning in this codec")
        kind, default_outcome, service = EVENTS[event]
        service_code = _optional_text(doc, "service_code", what)
        if service_code is not None:
            if mappings.table("mtszn.service").canonical(service_code) != service and service:
                raise WireDecodeError(f"МТСЗН callback: event {doc['event_type']!r} does not belong to"
                                      f" service {service_code!r}")
        body: dict[str, Any] = {"referral_id": _text(doc, "referral_no", what)}
        if kind == "referral.rejected":
            body["reason"] = _reason(mappings, _text(doc, "reason_code", what))
        else:
            body["outcome"] = _optional_text(doc, "result_text", what) or default_outcome
        return [_message({
            "message_id": _text(doc, "event_id", what),
            "type": kind,
            "case_id": _text(doc, "case_ref", what),
            "occurred_at": _text(doc, "occurred_at", what),
            "body": body,
        }, what)]

    # -- record lookups (document-request flow) ----------------------------------------------------------

    def encode_lookup(
        self, lookup: RecordLookup, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest:
        record_type = mappings.table("mtszn.record").external(lookup.record_kind)
        if not is_valid_iin(lookup.iin):
            raise WireDecodeError("МТСЗН lookup: the IIN is not valid (12 digits with a correct check digit)")
        doc = {
            "request_id": lookup.request_id,
            "record_type": record_type,
            "iin": lookup.iin,  # in the signed body, never in the URL
            "purpose": lookup.purpose,
            "requested_at": context.now.isoformat(),
        }
        return WireRequest("POST", STATUS_SEARCH_PATH, _headers(lookup.request_id), _dumps(doc))

    def decode_lookup(
        self, response: WireResponse, *, mappings: Mappings, lookup: RecordLookup, context: DecodeContext
    ) -> RecordResult:
        what = "lookup answer"
        if not 200 <= response.status < 300:
            raise WireDecodeError(f"МТСЗН answered the lookup with HTTP {response.status}")
        doc = _json(response.body, what)
        if _text(doc, "request_id", what) != lookup.request_id:
            raise WireDecodeError("МТСЗН lookup answer names another request_id")
        record_type = _optional_text(doc, "record_type", what)
        if record_type is not None and mappings.table("mtszn.record").canonical(record_type) != lookup.record_kind:
            raise WireDecodeError(f"МТСЗН lookup answer is a {record_type!r} record, not {lookup.record_kind!r}")
        found = doc.get("found")
        if not isinstance(found, bool):
            raise WireDecodeError("МТСЗН lookup answer: field 'found' must be true or false")
        as_of_text = _optional_text(doc, "as_of", what)
        as_of = _aware(as_of_text, "as_of", what) if as_of_text else context.received_at
        if not found:
            return RecordResult(record_kind=lookup.record_kind, found=False, data={}, as_of=as_of)
        data: dict[str, object] = {
            "status": mappings.table("mtszn.employment_status").canonical(_text(doc, "status", what)),
        }
        registered_on = _optional_text(doc, "registered_on", what)
        if registered_on is not None:
            try:
                data["registered_on"] = date.fromisoformat(registered_on).isoformat()
            except ValueError:
                raise WireDecodeError("МТСЗН lookup answer: 'registered_on' is not a date") from None
        centre = _optional_text(doc, "employment_centre", what)
        if centre is not None:
            data["employment_centre"] = centre
        if "social_contract" in doc and doc["social_contract"] is not None:
            if not isinstance(doc["social_contract"], bool):
                raise WireDecodeError("МТСЗН lookup answer: field 'social_contract' must be true or false")
            data["social_contract"] = doc["social_contract"]
        return RecordResult(record_kind=lookup.record_kind, found=True, data=data, as_of=as_of)
