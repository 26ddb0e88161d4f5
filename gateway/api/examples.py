"""Examples for the OpenAPI document: one per message type, per request body and (in problems.py) per problem type.

Realistic on purpose: Kazakh and Russian names in Cyrillic, IINs whose check digit holds, current region codes
(gateway/mappings/codes/common.yaml: KZ-35 Қарағанды облысы, KZ-62 Ұлытау облысы, KZ-71 Астана). tests/test_openapi.py
validates every example against its schema and the canonical model.
"""

from __future__ import annotations

from typing import Any

from adapters.con.codec import CON_NS, TYPES_NS
from adapters.health.codec import CASE_ID_SYSTEM, REFERRAL_ID_SYSTEM
from gateway.canonical.iin import iin_check_digit


def _iin(birth: str, century: str, serial: int) -> str:
    """The first valid IIN at or after `serial` for a YYMMDD birth date and century digit."""
    while True:
        first11 = f"{birth}{century}{serial:04d}"
        check = iin_check_digit(first11)
        if check is not None:
            return first11 + str(check)
        serial += 1


AIGUL_IIN = _iin("880514", "4", 2131)     # Жұмабекова Айгүл Серікқызы, female, born 1988-05-14
OLGA_IIN = _iin("790302", "4", 5507)      # Иванова Ольга Петровна, female, born 1979-03-02
ERLAN_IIN = _iin("950917", "3", 884)      # Сәрсенбаев Ерлан Қайратұлы, male, born 1995-09-17
CASE_ID = "35-2026-004817"
CASE_ID_ULYTAU = "62-2026-000231"
AT = "2026-03-02T09:30:00+05:00"


def _message(message_id: str, type_: str, body: dict[str, Any], *, case_id: str = CASE_ID, at: str = AT
             ) -> dict[str, Any]:
    return {"message_id": message_id, "type": type_, "case_id": case_id, "occurred_at": at, "body": body}


MESSAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "case.registered": ("A person released in Karaganda region registered with probation", _message(
        "0b7c3d2e-51a4-4f6e-9c1d-8a2f4e6b7c10", "case.registered", {
            "region": "KZ-35",
            "person": {"iin": AIGUL_IIN, "surname": "Жұмабекова", "given_name": "Айгүл", "patronymic": "Серікқызы",
                       "birth_date": "1988-05-14", "sex": "female"},
            "release_date": "2026-02-27", "has_minor_children": True})),
    "case.registered (Ulytau)": ("A case in Ulytau region, formed in 2022 (KZ-62)", _message(
        "5e1f0a9b-2c3d-4e5f-8a7b-6c5d4e3f2a19", "case.registered", {
            "region": "KZ-62",
            "person": {"iin": ERLAN_IIN, "surname": "Сәрсенбаев", "given_name": "Ерлан", "patronymic": "Қайратұлы",
                       "birth_date": "1995-09-17", "sex": "male"},
            "release_date": "2026-02-20", "has_minor_children": False}, case_id=CASE_ID_ULYTAU)),
    "plan.approved": ("The individual reintegration plan was approved", _message(
        "1c8d4e3f-62b5-4a7f-8d2e-9b3a5f7c8d21", "plan.approved", {"plan_id": "ИПР-35-2026-0417"},
        at="2026-03-03T11:00:00+05:00")),
    "risk.detected": ("A housing risk: nowhere to live after release", _message(
        "2d9e5f4a-73c6-4b8a-9e3f-ac4b6a8d9e32", "risk.detected", {
            "risk_id": "R-000418213", "domain": "housing", "level": "R3", "trigger": "homeless"},
        at="2026-03-03T11:05:00+05:00")),
    "risk.closed": ("The housing risk is no longer present", _message(
        "3e0f6a5b-84d7-4c9b-8f4a-bd5c7b9e0f43", "risk.closed", {"risk_id": "R-000418213"},
        at="2026-03-20T16:40:00+05:00")),
    "referral.requested": ("A shelter placement asked of the regional МИО", _message(
        "4f1a7b6c-95e8-4dac-9a5b-ce6d8cafa154", "referral.requested", {
            "referral_id": "REF-000531907", "kind": "shelter.placement", "risk_id": "R-000418213",
            "details": {"note": "Нужен временный приют в Караганде на 3 месяца", "household": 1}},
        at="2026-03-03T11:06:00+05:00")),
    "referral.accepted": ("The counterpart took the referral on", _message(
        "5a2b8c7d-a6f9-4ebd-8b6c-df7e9dbfb265", "referral.accepted", {"referral_id": "REF-000531907"},
        at="2026-03-04T10:15:00+05:00")),
    "referral.completed": ("Placed in a shelter", _message(
        "6b3c9d8e-b7fa-4fce-9c7d-e08faecfc376", "referral.completed", {
            "referral_id": "REF-000531907", "outcome": "Размещена в кризисном центре «Шаңырақ», г. Караганда"},
        at="2026-03-06T15:30:00+05:00")),
    "referral.rejected": ("The counterpart could not help, and says why", _message(
        "7c4dae9f-c80b-4adf-8d8e-f19abfd0d487", "referral.rejected", {
            "referral_id": "REF-000531908", "reason": "Жоқ бос орын: приют переполнен до 15 марта"},
        at="2026-03-04T12:00:00+05:00")),
    "escalation.raised": ("The Probation IS escalates an overdue referral to the region's leadership", _message(
        "8d5ebfa0-d91c-4be0-9e9f-02abc0e1e598", "escalation.raised", {
            "referral_id": "REF-000531907", "rule": "shelter-placement-3-working-days",
            "deadline_at": "2026-03-06T18:00:00+05:00",
            "reason": "Направление не исполнено в срок: 3 рабочих дня"},
        at="2026-03-06T18:05:00+05:00")),
}

DOCUMENT_REQUEST = {"case_id": CASE_ID, "record_kind": "identity_document_status", "iin": AIGUL_IIN,
                    "purpose": "Проверка удостоверения личности для направления на временную регистрацию"}

EXCHANGE_SEARCH = {"iin": OLGA_IIN, "since": "2026-03-01T00:00:00+05:00", "until": "2026-04-01T00:00:00+05:00",
                   "limit": 50, "reason": "Жалоба гражданки Ивановой О.П. от 12.03.2026, вх. № 214"}

# An Ed25519 public key pinned inline as a JWK (the counterparts file also takes a certificate file).
PINNED_JWK = '{"kty":"OKP","crv":"Ed25519","x":"A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"}'
INSTANCE = {"name": "mio-kz-62", "counterpart": "mio", "regions": ["KZ-62"], "role": "service",
            "base_url": "https://mio-ulytau.example.kz/api", "timeout_s": 10, "max_in_flight": 16, "enabled": True,
            "retry": {"max_attempts": 8, "base_delay_s": 0.5, "max_delay_s": 300, "deadline_s": 86400,
                      "retry_after_max_s": 600},
            "breaker": {"failure_threshold": 5, "reset_after_s": 30}, "keys": [PINNED_JWK], "log_bodies": True}
INSTANCE_PATCH = {"timeout_s": 15, "max_in_flight": 8}

MIO_CALLBACK = {"eventId": "9e6fc0b1-ea2d-4cf1-8fa0-13bcd1f2f6a9", "event": "REFERRAL_COMPLETED",
                "caseRef": CASE_ID, "occurredAt": "2026-03-06T15:30:00+05:00", "referralId": "REF-000531907",
                "outcome": "Размещена в кризисном центре «Шаңырақ», г. Караганда"}
HEALTH_CALLBACK = {
    "resourceType": "Task", "id": "b4c7e2f1-3a5d-4c6b-9e8f-1a2b3c4d5e6f",
    "meta": {"versionId": "2", "lastUpdated": "2026-03-10T09:12:00+05:00"},
    "basedOn": [{"reference": "ServiceRequest/c5d8f3a2-4b6e-4d7c-8f9a-2b3c4d5e6f70",
                 "identifier": {"system": REFERRAL_ID_SYSTEM, "value": "REF-000531911"}}],
    "groupIdentifier": {"system": CASE_ID_SYSTEM, "value": CASE_ID},
    "status": "completed", "intent": "order",
    "focus": {"reference": "ServiceRequest/c5d8f3a2-4b6e-4d7c-8f9a-2b3c4d5e6f70"},
    "for": {"reference": "Patient/kz-1f3e5a7c"}, "lastModified": "2026-03-10T09:12:00+05:00",
    "owner": {"display": "РЦЭЗ МЗ РК"}}
CON_CALLBACK = f"""<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Header><!-- wsse:Security with the ЦОН signature over the Body and a Timestamp --></soap:Header>
  <soap:Body>
    <typ:SendMessage xmlns:typ="{TYPES_NS}">
      <request>
        <requestInfo>
          <messageId>a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d</messageId>
          <correlationId>4f1a7b6c-95e8-4dac-9a5b-ce6d8cafa154</correlationId>
          <serviceId>CON_REFERRAL_NOTICE</serviceId>
          <messageDate>2026-03-05T14:20:00+05:00</messageDate>
          <sender><senderId>CON</senderId><password></password></sender>
        </requestInfo>
        <requestData><data>
          <ReferralNotice xmlns="{CON_NS}">
            <referralId>REF-000531909</referralId><caseRef>{CASE_ID}</caseRef>
            <service>CON_DOCUMENT_RESTORE</service><event>COMPLETED</event><result>DOCUMENT_ISSUED</result>
            <outcome>документ выдан (удостоверение личности): Жұмабекова Айгүл Серікқызы</outcome>
            <occurredAt>2026-03-05T14:20:00+05:00</occurredAt>
          </ReferralNotice>
        </data></requestData>
      </request>
    </typ:SendMessage>
  </soap:Body>
</soap:Envelope>
"""

SCHEMA_EXAMPLES = {  # component schema -> one example (OpenAPI 3.1 `examples`)
    "Person": MESSAGES["case.registered"][1]["body"]["person"],
    "DocumentRequestIn": DOCUMENT_REQUEST,
    "ExchangeSearch": EXCHANGE_SEARCH,
    **{f"{''.join(p.capitalize() for p in t.split('.'))}": m for t, (_, m) in MESSAGES.items() if "(" not in t},
}


def _named(items: dict[str, tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {"summary": summary, "value": value} for name, (summary, value) in items.items()}


REQUEST_EXAMPLES: dict[tuple[str, str], dict[str, dict[str, dict[str, Any]]]] = {
    ("/v1/messages", "post"): {"application/json": _named(MESSAGES)},
    ("/v1/document-requests", "post"): {"application/json": _named(
        {"identity-document": ("Is the person's identity document valid?", DOCUMENT_REQUEST)})},
    ("/v1/audit/exchanges/search", "post"): {"application/json": _named(
        {"by-iin": ("Every exchange about one person in March, for a complaint", EXCHANGE_SEARCH)})},
    ("/v1/admin/counterparts/{name}", "put"): {"application/json": _named(
        {"new-region": ("An МИО instance for Ulytau region", INSTANCE)})},
    ("/v1/admin/counterparts/{name}", "patch"): {"application/merge-patch+json": _named(
        {"slower": ("A longer timeout and fewer requests at once", INSTANCE_PATCH)}),
        "application/json": _named({"slower": ("The same patch sent as application/json", INSTANCE_PATCH)})},
    ("/v1/inbound/{counterpart}", "post"): {
        "application/json": _named({"mio-completed": ("МИО: the referral is done (POST /v1/inbound/mio)",
                                                      MIO_CALLBACK)}),
        "application/fhir+json": _named({"health-completed": ("Health registry: the FHIR Task is completed "
                                                              "(POST /v1/inbound/health)", HEALTH_CALLBACK)}),
        "text/xml": _named({"con-notice": ("ЦОН: a SOAP SendMessage with a ReferralNotice (POST /v1/inbound/con)",
                                           CON_CALLBACK)})},
}


def install(schema: dict[str, Any]) -> None:
    """Put the examples in the document: component schemas, and each request body's media types."""
    components = schema.get("components", {}).get("schemas", {})
    for name, value in SCHEMA_EXAMPLES.items():
        if name in components:
            components[name]["examples"] = [value]
    for (path, method), by_media in REQUEST_EXAMPLES.items():
        operation = schema["paths"][path][method]
        content = operation["requestBody"]["content"]
        for media_type, named in by_media.items():
            content.setdefault(media_type, {})["examples"] = named
