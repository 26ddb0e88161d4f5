"""ЦОН codec and simulator: golden SOAP, schemas, names byte-exact, refusals, real HTTP, callbacks, zeep."""

from __future__ import annotations

import threading
import uuid
from datetime import date, datetime, timezone
from typing import Iterator

import httpx
import pytest
import zeep
from fastapi import FastAPI, Request, Response
from lxml import etree

from adapters.con.codec import (
    CON_NS,
    SOAP_NS,
    SYNC_PATH,
    TYPES_NS,
    ConAdapter,
    build_fault,
    build_send_message,
    build_send_message_response,
    con,
    payload,
)
from adapters.con.simulator import create_app
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.iin import iin_check_digit
from gateway.canonical.messages import parse_message
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
from gateway.samples import SampleCases
from gateway.xmlsafe import parse_xml
from tests.adapters.golden_support import check_golden
from tests.harness import ThreadServer, sim_config, sim_stats, wait_for

MAPPINGS = load_mappings(ROOT / "gateway" / "mappings")
INSTANCE = MAPPINGS.instance("con")
NOW = datetime(2026, 3, 2, 4, 20, tzinfo=timezone.utc)
ADAPTER = ConAdapter()
WSDL = ROOT / "adapters" / "con" / "wsdl"
BINDING = "{http://bip.bee.kz/SyncChannel/v10/Interfaces}SyncChannelHttp_Binding"
LETTERS = "ё ә ғ қ ң ө ұ ү һ і Ё Ә Ғ Қ Ң Ө Ұ Ү Һ І"
IIN = "061211600012"
PERSON = {"iin": IIN, "surname": "Ёлкина-Өтегенова Сёмина", "given_name": "Әсел-Ұлжан Аңсаған",
          "patronymic": "Ғалымқызы Һүсейінқызы",
          "birth_date": "2006-12-11", "sex": "female"}
CASE = parse_message({
    "message_id": "9f8fad5b-d9cb-469f-a165-70867728950e", "type": "case.registered", "case_id": "KRG-2026-000123",
    "occurred_at": "2026-03-01T09:00:00+05:00", "body": {"region": "KZ-35", "person": PERSON},
})


def test_the_sample_person_uses_every_kazakh_letter() -> None:
    names = f"{PERSON['surname']} {PERSON['given_name']} {PERSON['patronymic']}".lower()
    assert set("ёәғқңөұүһі") <= set(names)


def _referral(kind: str, *, details: dict | None = None, n: int = 0):  # noqa: ANN202
    return parse_message({
        "message_id": f"{n}f8fad5b-d9cb-469f-a165-70867728950e", "type": "referral.requested",
        "case_id": "KRG-2026-000123", "occurred_at": "2026-03-02T09:15:00+05:00",
        "body": {"referral_id": f"REF-{n}", "kind": kind, "risk_id": "R-77", **({"details": details} if details else {})},
    })


DOCUMENT = _referral("document.restore", details={"document_type": "identity_card", "note": f"жоғалған: {LETTERS}"},
                     n=0)
REGISTRATION = _referral("registration.temporary", n=1, details={
    "host_type": "partner_ngo", "host_name": "«Үміт» қоғамдық қоры", "address": "Қарағанды қ., Әлиханов к-сі, 7",
    "nights": 90})


def _encode(message, case=CASE):  # noqa: ANN001, ANN202
    return ADAPTER.encode(message, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW, case=case))


def _ctx() -> DecodeContext:
    return DecodeContext(received_at=NOW)


def _decode(body: bytes, request=DOCUMENT, status: int = 200):  # noqa: ANN001, ANN202
    return ADAPTER.decode_response(WireResponse(status, (), body), mappings=MAPPINGS, request=request, context=_ctx())


def _callback(body: bytes):  # noqa: ANN202
    return ADAPTER.decode_callback(WireRequest("POST", "/v1/inbound/con", (), body), mappings=MAPPINGS,
                                   context=_ctx())


def _iin(serial_residues: dict[int, int], birth: date = date(1990, 1, 1), century: int = 4) -> str:
    """A valid IIN whose serial (digits 8-11) leaves the given residues (modulus -> residue)."""
    for serial in range(1, 10000):
        if all(serial % m == r for m, r in serial_residues.items()):
            first11 = f"{birth:%y%m%d}{century}{serial:04d}"
            check = iin_check_digit(first11)
            if check is not None:
                return first11 + str(check)
    raise AssertionError("no such IIN")


def _xpath(body: bytes, path: str) -> list:
    return parse_xml(body).xpath(path, namespaces={"s": SOAP_NS, "t": TYPES_NS, "c": CON_NS})


# ------------------------------------------------------------------------------------------ encode


@pytest.mark.parametrize("message,name,service", [
    (DOCUMENT, "referral.document.restore.request.xml", "CON_DOCUMENT_RESTORE"),
    (REGISTRATION, "referral.registration.temporary.request.xml", "CON_TEMPORARY_REGISTRATION"),
])
def test_referral_encodes_to_the_golden_request(message, name: str, service: str) -> None:  # noqa: ANN001
    wire = _encode(message)
    assert (wire.method, wire.path) == ("POST", SYNC_PATH)
    assert wire.header("content-type") == "text/xml; charset=utf-8"
    assert wire.header("soapaction") == '"http://bip.bee.kz/SyncChannel/v10/Interfaces/SendMessage"'
    assert wire.header("x-message-id") == str(message.message_id)
    check_golden("con", name, wire.body)
    info = "/s:Envelope/s:Body/t:SendMessage/request/requestInfo"
    assert _xpath(wire.body, f"{info}/messageId/text()") == [str(message.message_id)]
    assert _xpath(wire.body, f"{info}/serviceId/text()") == [service]
    assert _xpath(wire.body, f"{info}/messageDate/text()") == ["2026-03-02T04:20:00+00:00"]  # the context's clock
    assert _xpath(wire.body, f"{info}/sender/senderId/text()") == ["PROBATION_GW"]
    assert [p.text for p in _xpath(wire.body, f"{info}/sender/password")] == [None]  # present and empty
    person = "//requestData/data/c:ReferralRequest/c:person"
    for tag, value in (("iin", IIN), ("surname", PERSON["surname"]), ("givenName", PERSON["given_name"]),
                       ("patronymic", PERSON["patronymic"]), ("birthDate", "2006-12-11"), ("sex", "2")):
        assert _xpath(wire.body, f"{person}/c:{tag}/text()") == [value]
    for name_part in (PERSON["surname"], PERSON["given_name"], PERSON["patronymic"]):
        assert name_part.encode() in wire.body  # UTF-8 as is, no character references


def test_referral_payload_carries_the_kind_specific_fields() -> None:
    doc = _encode(DOCUMENT).body
    assert _xpath(doc, "//c:ReferralRequest/c:documentType/text()") == ["IDENTITY_CARD"]
    assert _xpath(doc, "//c:ReferralRequest/c:detail[@name='note']/text()") == [f"жоғалған: {LETTERS}"]
    reg = _encode(REGISTRATION).body
    assert _xpath(reg, "//c:registration/c:hostType/text()") == ["PARTNER_NGO"]
    assert _xpath(reg, "//c:registration/c:hostName/text()") == ["«Үміт» қоғамдық қоры"]
    assert _xpath(reg, "//c:ReferralRequest/c:detail[@name='nights']/text()") == ["90"]
    assert not _xpath(reg, "//c:documentType")


@pytest.mark.parametrize("kind", ["identity_document_status", "registration_status"])
def test_lookup_encodes_to_the_golden_request(kind: str) -> None:
    lookup = RecordLookup("3f8fad5b-d9cb-469f-a165-70867728950e", kind, IIN, "reintegration case KRG-2026-000123")
    wire = ADAPTER.encode_lookup(lookup, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))
    assert wire.path == SYNC_PATH and wire.header("x-message-id") == lookup.request_id
    check_golden("con", f"lookup.{kind}.request.xml", wire.body)
    assert _xpath(wire.body, "//requestInfo/serviceId/text()") == [MAPPINGS.table("con.lookup").external(kind)]
    assert _xpath(wire.body, "//c:RecordRequest/c:iin/text()") == [IIN]


def test_encoded_requests_are_valid_against_the_published_schemas() -> None:
    types = etree.XMLSchema(etree.parse(str(WSDL / "SyncChannelTypes.xsd")))
    payloads = etree.XMLSchema(etree.parse(str(WSDL / "ConPayload.xsd")))
    lookup = RecordLookup(str(uuid.uuid4()), "registration_status", IIN, "check")
    bodies = [_encode(DOCUMENT).body, _encode(REGISTRATION).body,
              ADAPTER.encode_lookup(lookup, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW)).body]
    for body in bodies:
        send = _xpath(body, "/s:Envelope/s:Body/t:SendMessage")[0]
        types.assertValid(etree.ElementTree(send))
        payloads.assertValid(etree.ElementTree(_xpath(body, "//requestData/data/*")[0]))


def test_encode_refuses_without_the_case_or_for_other_messages() -> None:
    with pytest.raises(WireDecodeError, match="case registration"):
        _encode(DOCUMENT, case=None)
    other_case = CASE.model_copy(update={"case_id": "OTHER-1"})
    with pytest.raises(WireDecodeError, match="another case"):
        _encode(DOCUMENT, case=other_case)
    with pytest.raises(WireDecodeError, match="serves no"):
        _encode(_referral("shelter.placement"))
    plan = parse_message({"message_id": str(uuid.uuid4()), "type": "plan.approved", "case_id": "KRG-2026-000123",
                          "occurred_at": "2026-03-02T09:15:00+05:00", "body": {"plan_id": "P"}})
    with pytest.raises(WireDecodeError, match="plan.approved"):
        _encode(plan)
    with pytest.raises(UnknownCode):
        _encode(_referral("document.restore", details={"document_type": "library_card"}))
    with pytest.raises(WireDecodeError):  # a control character XML cannot carry
        _encode(_referral("document.restore", details={"note": "a\x00b"}))


# ------------------------------------------------------------------------------------------ responses


def _response(code: str, message: str, *, referral_id: str = "REF-0",
              correlation: str = str(DOCUMENT.message_id)) -> bytes:
    decision = payload("ReferralDecision")
    etree.SubElement(decision, con("referralId")).text = referral_id
    return build_send_message_response(
        message_id="5f8fad5b-d9cb-469f-a165-70867728950e", correlation_id=correlation,
        response_date=datetime.fromisoformat("2026-03-02T09:20:00+05:00"), code=code, message=message, data=decision)


@pytest.mark.parametrize("code,expected", [("ACCEPTED", "referral.accepted"), ("REJECTED", "referral.rejected")])
def test_decision_decodes(code: str, expected: str) -> None:
    body = _response(code, "құжаттар толық емес: ё ә ғ")
    check_golden("con", f"response.{code.lower()}.xml", body)
    (reply,) = _decode(body)
    assert reply.type == expected and reply.body.referral_id == "REF-0" and reply.case_id == DOCUMENT.case_id
    assert reply.message_id == derived_message_id(DOCUMENT.message_id, expected)  # a retry yields the same id
    assert reply.occurred_at == datetime.fromisoformat("2026-03-02T09:20:00+05:00")
    if expected == "referral.rejected":
        assert reply.body.reason == "құжаттар толық емес: ё ә ғ"


def _fault(message: str = "сервис недоступен") -> bytes:
    return build_fault(faultcode="Server", faultstring=message, error_code="SE_UNAVAILABLE", error_message=message,
                       error_date=datetime.fromisoformat("2026-03-02T09:20:00+05:00"))


def test_soap_fault_is_refused_with_its_error_code_and_without_the_iin() -> None:
    body = _fault(f"person {IIN} not in registry")
    check_golden("con", "response.fault.xml", _fault())
    for status in (200, 500):
        with pytest.raises(WireDecodeError) as err:
            _decode(body, status=status)
        assert "SOAP Fault" in str(err.value) and "SE_UNAVAILABLE" in str(err.value)
        assert IIN not in str(err.value)
    with pytest.raises(WireDecodeError, match="SOAP Fault"):
        _callback(body)


@pytest.mark.parametrize("body,why", [
    (b"", "not well-formed"),
    (b"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'><soapenv:Body>",
     "not well-formed"),
    (b'{"status": "ACCEPTED"}', "not well-formed"),
    (b"<Envelope><Body/></Envelope>", "not a SOAP 1.1 Envelope"),
    (b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body/></s:Envelope>", "empty"),
    (b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body><Other/></s:Body></s:Envelope>",
     "unexpected SOAP operation"),
])
def test_malformed_soap_is_refused(body: bytes, why: str) -> None:
    with pytest.raises(WireDecodeError, match=why):
        _decode(body)


def test_unknown_missing_or_mismatched_answers_are_refused() -> None:
    with pytest.raises(UnknownCode, match="con.status"):
        _decode(_response("MAYBE", "?"))
    with pytest.raises(WireDecodeError, match="correlationId"):
        _decode(_response("ACCEPTED", "ok", correlation=str(uuid.uuid4())))
    with pytest.raises(WireDecodeError, match="another referral"):
        _decode(_response("ACCEPTED", "ok", referral_id="REF-999"))
    with pytest.raises(WireDecodeError, match="rejection"):
        _decode(_response("REJECTED", ""))
    with pytest.raises(UnknownCode) as err:
        _decode(_response(IIN, "a status code that is an IIN"))
    assert IIN not in str(err.value)


def test_doctype_and_external_entities_are_refused() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>&x;</s:Body></s:Envelope>")
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            + _response("ACCEPTED", "&b;").split(b"?>", 1)[1].replace(b"&amp;b;", b"&b;"))
    for body in (xxe, bomb):
        with pytest.raises(WireDecodeError, match="DOCTYPE"):
            _decode(body)
        with pytest.raises(WireDecodeError, match="DOCTYPE"):
            _callback(body)


# ------------------------------------------------------------------------------------------ callbacks


def _notice(event: str, *, result: str | None = None, outcome: str | None = None, reason: str | None = None,
            message_id: str = "6f8fad5b-d9cb-469f-a165-70867728950e", service: str = "CON_REFERRAL_NOTICE") -> bytes:
    notice = payload("ReferralNotice")
    for tag, value in (("referralId", "REF-0"), ("caseRef", "KRG-2026-000123"), ("service", "CON_DOCUMENT_RESTORE"),
                       ("event", event), ("result", result), ("outcome", outcome), ("reason", reason),
                       ("occurredAt", "2026-03-05T11:00:00+05:00")):
        if value is not None:
            etree.SubElement(notice, con(tag)).text = value
    return build_send_message(message_id=message_id, correlation_id=str(DOCUMENT.message_id), service_id=service,
                              message_date=datetime.fromisoformat("2026-03-05T11:00:01+05:00"), sender_id="CON",
                              data=notice)


def test_completion_callback_decodes_with_names_byte_exact() -> None:
    outcome = f"удостоверение личности выдано: {PERSON['surname']} {PERSON['given_name']} {LETTERS}"
    body = _notice("COMPLETED", result="DOCUMENT_ISSUED", outcome=outcome)
    check_golden("con", "callback.completed.xml", body)
    (msg,) = _callback(body)
    assert msg.type == "referral.completed" and msg.message_id == uuid.UUID("6f8fad5b-d9cb-469f-a165-70867728950e")
    assert msg.case_id == "KRG-2026-000123" and msg.body.referral_id == "REF-0"
    assert msg.occurred_at == datetime.fromisoformat("2026-03-05T11:00:00+05:00")
    assert msg.body.outcome == outcome
    assert msg.to_json().count(outcome.encode()) == 1


def test_refusal_callback_decodes_to_rejected() -> None:
    body = _notice("REFUSED", reason="заявитель не явился в ЦОН")
    check_golden("con", "callback.refused.xml", body)
    (msg,) = _callback(body)
    assert msg.type == "referral.rejected" and msg.body.reason == "заявитель не явился в ЦОН"


@pytest.mark.parametrize("body,why", [
    (_notice("COMPLETED", message_id="not-a-uuid"), "not a UUID"),
    (_notice("DONE?"), "con.event"),
    (_notice("COMPLETED", result="CAKE_BAKED"), "con.result"),
    (_notice("REFUSED"), "refusal"),
    (_notice("COMPLETED", service="CON_DOCUMENT_RESTORE"), "con.inbound"),
    (_response("ACCEPTED", "ok"), "expected SendMessage"),
])
def test_bad_callbacks_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(WireDecodeError, match=why):
        _callback(body)


# ------------------------------------------------------------------------------------------ lookups


def _lookup_response(code: str, record: etree._Element | None, request_id: str) -> bytes:
    return build_send_message_response(
        message_id="7f8fad5b-d9cb-469f-a165-70867728950e", correlation_id=request_id,
        response_date=datetime.fromisoformat("2026-03-02T09:20:00+05:00"), code=code, message="—", data=record)


def _record(tag: str, iin: str, **fields: str) -> etree._Element:
    el = payload(tag)
    etree.SubElement(el, con("iin")).text = iin
    for key, value in fields.items():
        etree.SubElement(el, con(key)).text = value
    return el


def test_lookup_answers_decode() -> None:
    rid = "3f8fad5b-d9cb-469f-a165-70867728950e"
    identity = RecordLookup(rid, "identity_document_status", IIN, "case")
    body = _lookup_response("FOUND", _record("IdentityDocument", IIN, documentType="IDENTITY_CARD", number="012345678",
                                             issuedOn="2020-01-02", validUntil="2030-01-02", state="VALID"), rid)
    check_golden("con", "lookup.identity_document_status.found.xml", body)
    result = ADAPTER.decode_lookup(WireResponse(200, (), body), mappings=MAPPINGS, lookup=identity, context=_ctx())
    assert result.found and result.record_kind == "identity_document_status"
    assert result.data == {"document_type": "identity_card", "state": "valid", "number": "012345678",
                           "issued_on": "2020-01-02", "valid_until": "2030-01-02"}
    assert result.as_of == datetime.fromisoformat("2026-03-02T09:20:00+05:00")

    reg = RecordLookup(rid, "registration_status", IIN, "case")
    body = _lookup_response("NOT_FOUND", None, rid)
    check_golden("con", "lookup.registration_status.not_found.xml", body)
    result = ADAPTER.decode_lookup(WireResponse(200, (), body), mappings=MAPPINGS, lookup=reg, context=_ctx())
    assert not result.found and result.data == {}

    other = _lookup_response("FOUND", _record("Registration", "900101300017", state="PERMANENT"), rid)
    with pytest.raises(WireDecodeError, match="another person"):
        ADAPTER.decode_lookup(WireResponse(200, (), other), mappings=MAPPINGS, lookup=reg, context=_ctx())
    with pytest.raises(WireDecodeError, match="SOAP Fault"):
        ADAPTER.decode_lookup(WireResponse(500, (), _fault()), mappings=MAPPINGS, lookup=reg, context=_ctx())
    with pytest.raises(WireDecodeError, match="keeps no"):
        ADAPTER.decode_lookup(WireResponse(200, (), body), mappings=MAPPINGS,
                              lookup=RecordLookup(rid, "osms_status", IIN, "x"), context=_ctx())


# ------------------------------------------------------------------------------------------ over HTTP


class _Receiver:
    """The gateway's callback endpoint stand-in: stores every SOAP body POSTed to /v1/inbound/con."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/v1/inbound/con")
        async def inbound(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.bodies.append((dict(request.headers), body))
            return Response(b'{"accepted": []}', status_code=202, media_type="application/json")


@pytest.fixture
def live() -> Iterator[tuple[ThreadServer, _Receiver]]:
    receiver = _Receiver()
    rx = ThreadServer(receiver.app).start()
    sim = ThreadServer(create_app(callback_url=f"{rx.url}/v1/inbound/con")).start()
    sim_config(sim, callback_delay_ms=0)
    try:
        yield sim, receiver
    finally:
        sim.stop()
        rx.stop()


def _post(sim: ThreadServer, wire: WireRequest) -> httpx.Response:
    return httpx.post(sim.url + wire.path, content=wire.body, headers=list(wire.headers), timeout=10)


def test_referral_over_http_is_accepted_then_completed_with_names_byte_exact(live) -> None:  # noqa: ANN001
    sim, receiver = live
    for message in (DOCUMENT, REGISTRATION):
        wire = _encode(message)
        r = _post(sim, wire)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
        (reply,) = _decode(r.content, request=message)
        assert reply.type == "referral.accepted" and reply.body.referral_id == message.body.referral_id
        again = _post(sim, wire)  # a retry: ЦОН drops the repeat and answers the same
        assert again.content == r.content
    wait_for(lambda: sim_stats(sim)["callbacks_sent"] >= 2, timeout=10, what="two ЦОН notices")
    stats = sim_stats(sim)
    assert stats["unique_messages"] == 2 and stats["duplicates"] == 2 and stats["processed_twice"] == []
    assert stats["callbacks_sent"] == 2
    received = {m["data"]["referralId"]: m for m in httpx.get(f"{sim.url}/_sim/received").json()}
    assert received["REF-0"]["data"]["person"]["surname"] == PERSON["surname"]
    assert received["REF-0"]["senderId"] == "PROBATION_GW"

    names = f"{PERSON['surname']} {PERSON['given_name']} {PERSON['patronymic']}"
    completed = {}
    for headers, body in receiver.bodies:
        assert headers["content-type"] == "text/xml; charset=utf-8"
        (msg,) = _callback(body)
        completed[msg.body.referral_id] = msg
        assert msg.type == "referral.completed" and msg.case_id == "KRG-2026-000123"
        assert names.encode() in body and names.encode() in msg.to_json()
        assert names in msg.body.outcome
        correlation = _xpath(body, "//requestInfo/correlationId/text()")[0]
        assert correlation == str((DOCUMENT if msg.body.referral_id == "REF-0" else REGISTRATION).message_id)
        assert msg.message_id not in (DOCUMENT.message_id, REGISTRATION.message_id)  # the notice's own id
    assert set(completed) == {"REF-0", "REF-1"}
    assert "Әлиханов" in completed["REF-1"].body.outcome  # the address asked for


def test_sample_case_over_http(live) -> None:  # noqa: ANN001
    sim, receiver = live
    samples = SampleCases(seed=11, now=NOW)
    case = parse_message(samples.case()[0])
    referral = parse_message({**samples.shelter_referral(case.case_id), "body": {
        "referral_id": "REF-S", "kind": "document.restore"}})
    r = _post(sim, ADAPTER.encode(referral, mappings=MAPPINGS, instance=INSTANCE,
                                  context=EncodeContext(now=NOW, case=case)))
    (reply,) = _decode(r.content, request=referral)
    assert reply.type == "referral.accepted" and reply.case_id == case.case_id
    wait_for(lambda: receiver.bodies, timeout=10, what="the notice")
    (msg,) = _callback(receiver.bodies[0][1])
    assert msg.type == "referral.completed" and msg.case_id == case.case_id
    assert case.body.person.surname in msg.body.outcome


def test_callbacks_can_be_switched_off(live) -> None:  # noqa: ANN001
    sim, receiver = live
    sim_config(sim, callbacks=False)
    (reply,) = _decode(_post(sim, _encode(DOCUMENT)).content)
    assert reply.type == "referral.accepted"
    assert sim_stats(sim)["callbacks_sent"] == 0 and receiver.bodies == []


def test_lookups_end_to_end_follow_the_iin_rule(live) -> None:  # noqa: ANN001
    sim, _ = live
    cases = [
        (_iin({5: 0, 3: 1}), "invalid", "permanent"),
        (_iin({5: 1, 3: 2}), "valid", "temporary"),
        (_iin({5: 2, 3: 0}), "valid", None),
    ]
    for iin, document_state, registration_state in cases:
        for kind in ("identity_document_status", "registration_status"):
            lookup = RecordLookup(str(uuid.uuid4()), kind, iin, "reintegration case")
            wire = ADAPTER.encode_lookup(lookup, mappings=MAPPINGS, instance=INSTANCE, context=EncodeContext(now=NOW))
            r = _post(sim, wire)
            assert r.status_code == 200, r.text
            result = ADAPTER.decode_lookup(WireResponse(r.status_code, (), r.content), mappings=MAPPINGS,
                                           lookup=lookup, context=_ctx())
            assert result.record_kind == kind and result.as_of.tzinfo is not None
            if kind == "identity_document_status":
                assert result.found and result.data["state"] == document_state
                assert result.data["document_type"] == "identity_card"
            elif registration_state is None:
                assert not result.found and result.data == {}
            else:
                assert result.found and result.data["state"] == registration_state
                assert "Қарағанды" in str(result.data["address"])


def test_simulator_faults_are_soap_faults_the_codec_refuses(live) -> None:  # noqa: ANN001
    sim, _ = live
    wire = _encode(DOCUMENT)
    unknown = wire.body.replace(b"<serviceId>CON_DOCUMENT_RESTORE</serviceId>", b"<serviceId>NO_SUCH</serviceId>")
    r = httpx.post(sim.url + SYNC_PATH, content=unknown, headers=list(wire.headers))
    assert r.status_code == 500 and _xpath(r.content, "//t:ErrorInfo/errorCode/text()") == ["UNKNOWN_SERVICE"]
    with pytest.raises(WireDecodeError, match="UNKNOWN_SERVICE"):
        _decode(r.content)
    r = httpx.post(sim.url + SYNC_PATH, content=b"<not-soap", headers=list(wire.headers))
    assert r.status_code == 500 and _xpath(r.content, "//t:ErrorInfo/errorCode/text()") == ["BAD_REQUEST"]
    doctype = b'<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + wire.body.split(b"?>", 1)[1]
    r = httpx.post(sim.url + SYNC_PATH, content=doctype, headers=list(wire.headers))
    assert r.status_code == 500 and b"passwd" not in r.content and b"root:" not in r.content
    sim_config(sim, malformed_count=1)
    with pytest.raises(WireDecodeError, match="not well-formed"):
        _decode(_post(sim, wire).content)


def test_zeep_loads_the_wsdl_and_calls_the_simulator(live) -> None:  # noqa: ANN001
    sim, receiver = live
    client = zeep.Client(str(WSDL / "SyncChannel.wsdl"))
    service = client.create_service(BINDING, sim.url + SYNC_PATH)
    sender = {"senderId": "PROBATION_GW", "password": ""}
    record_request = client.get_element(f"{{{CON_NS}}}RecordRequest")
    iin = _iin({5: 0, 3: 2})
    result = service.SendMessage(request={
        "requestInfo": {"messageId": "zeep-1", "serviceId": "CON_IDENTITY_DOCUMENT_STATUS", "messageDate": NOW,
                        "sender": sender},
        "requestData": {"data": {"_value_1": zeep.xsd.AnyObject(record_request,
                                                                record_request(iin=iin, purpose="zeep"))}},
    })
    assert result.responseInfo.correlationId == "zeep-1" and result.responseInfo.status.code == "FOUND"
    record = result.responseData.data._value_1
    assert record.iin == iin and record.state == "INVALID" and record.documentType == "IDENTITY_CARD"

    # a referral built by zeep from the published schema is accepted and completed like the codec's
    referral_request = client.get_element(f"{{{CON_NS}}}ReferralRequest")
    person = {"iin": IIN, "surname": PERSON["surname"], "givenName": PERSON["given_name"],
              "birthDate": date(2006, 12, 11), "sex": "2"}
    doc = referral_request(referralId="REF-Z", service="CON_DOCUMENT_RESTORE", caseRef="KRG-Z", requestedAt=NOW,
                           region="KZ-35", person=person, documentType="PASSPORT")
    result = service.SendMessage(request={
        "requestInfo": {"messageId": "zeep-2", "serviceId": "CON_DOCUMENT_RESTORE", "messageDate": NOW,
                        "sender": sender},
        "requestData": {"data": {"_value_1": zeep.xsd.AnyObject(referral_request, doc)}},
    })
    assert result.responseInfo.status.code == "ACCEPTED" and result.responseData.data._value_1.referralId == "REF-Z"
    wait_for(lambda: receiver.bodies, timeout=10, what="the notice")
    (msg,) = _callback(receiver.bodies[0][1])
    assert msg.body.referral_id == "REF-Z" and PERSON["surname"] in msg.body.outcome

    # the WSDL the simulator serves points at itself; an unknown service is a typed fault
    served = zeep.Client(f"{sim.url}{SYNC_PATH}?wsdl")
    with pytest.raises(zeep.exceptions.Fault) as fault:
        served.service.SendMessage(request={
            "requestInfo": {"messageId": "zeep-3", "serviceId": "NO_SUCH", "messageDate": NOW, "sender": sender},
            "requestData": {"data": {}},
        })
    assert fault.value.code.endswith("Client")
    assert fault.value.detail.xpath("//errorCode/text()") == ["UNKNOWN_SERVICE"]


def test_wsdl_path_without_query_is_not_found(live) -> None:  # noqa: ANN001
    sim, _ = live
    assert httpx.get(sim.url + SYNC_PATH).status_code == 404
    assert httpx.get(sim.url + SYNC_PATH + "../../etc/passwd").status_code == 404
    assert httpx.get(sim.url + SYNC_PATH + "ConPayload.xsd").status_code == 200


def test_code_tables_are_complete_for_the_adapter() -> None:
    assert set(MAPPINGS.table("con.service").codes) == {k for k, v in MAPPINGS.kinds.kinds.items()
                                                         if v.counterpart == "con"}
    assert set(MAPPINGS.table("con.result").codes) == set(MAPPINGS.table("con.service").codes)
    assert set(MAPPINGS.table("con.lookup").codes) == {"identity_document_status", "registration_status"}
    assert MAPPINGS.table("con.document_type").canonical("SOMETHING_NEW") == "other"  # the table's default
