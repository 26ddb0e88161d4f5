"""A ЦОН simulator behind a model of ШЭП's SyncChannel: SOAP 1.1 `SendMessage` at `/bip-sync-wss-gost/`.

- Referrals (`CON_DOCUMENT_RESTORE`, `CON_TEMPORARY_REGISTRATION`): answered ACCEPTED (REJECTED when the
  IIN fails its check digit or the document type is not one ЦОН knows), and after an accepted referral a
  `ReferralNotice` (event COMPLETED, its own messageId UUID, correlationId = the referral's messageId) is
  POSTed as a `SendMessage` to the gateway's callback URL. The notice's outcome names the person, so names
  make the whole round trip.
- Lookups, deterministic from the IIN's serial (digits 8–11) so tests know what to expect:
  `CON_IDENTITY_DOCUMENT_STATUS` is always FOUND, an IDENTITY_CARD in state VALID unless the serial is
  divisible by 5 (then INVALID); `CON_REGISTRATION_STATUS` is NOT_FOUND when the serial is divisible by 3,
  PERMANENT when it leaves 1, TEMPORARY when it leaves 2.
- An unknown serviceId, a body that is not a SendMessage, a missing messageId or a lookup with an invalid
  IIN get a SOAP Fault (HTTP 500) with `ErrorInfo`. A repeated messageId gets the first answer.
- `GET /bip-sync-wss-gost/?wsdl` serves `wsdl/SyncChannel.wsdl` with the address set to this server; the
  schemas it imports are served next to it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request, Response
from lxml import etree

from adapters.con.codec import (
    CON_NS,
    CONTENT_TYPE,
    SOAP_ACTION,
    SYNC_PATH,
    build_fault,
    build_send_message,
    build_send_message_response,
    con,
    payload,
    read_envelope,
    text,
)
from adapters.simulation import SimSigner, answer, apply_faults, repeat, simulator_app, slow
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.iin import is_valid_iin
from gateway.xmlsafe import parse_xml

WSDL_DIR = Path(__file__).with_name("wsdl")
ALMATY = ZoneInfo("Asia/Almaty")
NOTICE_SERVICE = "CON_REFERRAL_NOTICE"
REFERRAL_SERVICES = {"CON_DOCUMENT_RESTORE": "document", "CON_TEMPORARY_REGISTRATION": "registration"}
LOOKUP_SERVICES = ("CON_IDENTITY_DOCUMENT_STATUS", "CON_REGISTRATION_STATUS")
DOCUMENT_TYPES = {"IDENTITY_CARD": "удостоверение личности", "PASSPORT": "паспорт",
                  "BIRTH_CERTIFICATE": "свидетельство о рождении", "RESIDENCE_PERMIT": "вид на жительство",
                  "OTHER": "документ"}
TEMPORARY_ADDRESS = "Қарағанды қ., Бұқар жырау даңғылы, 1 (бейімдеу орталығы)"


def _now() -> datetime:
    return datetime.now(ALMATY).replace(microsecond=0)


def _as_dict(el: etree._Element) -> Any:
    """A payload element as JSON for /_sim/received: local names, text, repeated names as lists."""
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return el.text or ""
    out: dict[str, Any] = {}
    for c in children:
        key = etree.QName(c).localname
        value = _as_dict(c)
        if c.get("name") is not None:
            value = {"name": c.get("name"), "value": value}
        if key in out:
            out[key] = out[key] if isinstance(out[key], list) else [out[key]]
            out[key].append(value)
        else:
            out[key] = value
    return out


def identity_document(iin: str) -> dict[str, str]:
    """The simulator's identity-document record for an IIN (deterministic)."""
    serial = int(iin[7:11])
    issued = date(2016 + serial % 8, 1 + serial % 12, 1 + serial % 28)
    return {"documentType": "IDENTITY_CARD", "number": f"{int(iin) * 7919 % 10**9:09d}",
            "issuer": "ҚР ІІМ", "issuedOn": issued.isoformat(),
            "validUntil": issued.replace(year=issued.year + 10).isoformat(),
            "state": "INVALID" if serial % 5 == 0 else "VALID"}


def registration(iin: str) -> dict[str, str] | None:
    """The simulator's registration record for an IIN (deterministic), or None when there is none."""
    serial = int(iin[7:11])
    if serial % 3 == 0:
        return None
    if serial % 3 == 1:
        return {"state": "PERMANENT", "region": "KZ-35", "address": "Қарағанды қ., Ерубаев к-сі, 12"}
    return {"state": "TEMPORARY", "region": "KZ-35", "address": TEMPORARY_ADDRESS,
            "validUntil": date(2027, 1 + serial % 12, 1 + serial % 28).isoformat()}


def _record(tag: str, iin: str, fields: dict[str, str]) -> etree._Element:
    el = payload(tag)
    etree.SubElement(el, con("iin")).text = iin
    for key, value in fields.items():
        etree.SubElement(el, con(key)).text = value
    return el


def create_app(*, name: str = "con", callback_url: str = "http://127.0.0.1:8080/v1/inbound/con", signer: SimSigner | None = None) -> FastAPI:
    app, state, sender = simulator_app("ЦОН simulator", name=name, callback_url=callback_url, signer=signer)

    def fault(faultcode: str, error_code: str, message: str) -> tuple[int, bytes]:
        return 500, build_fault(faultcode=faultcode, faultstring=message, error_code=error_code,
                                error_message=message, error_date=_now())

    def reply(message_id: str, code: str, message: str, data: etree._Element | None = None) -> tuple[int, bytes]:
        return 200, build_send_message_response(message_id=str(uuid.uuid4()), correlation_id=message_id,
                                                response_date=_now(), code=code, message=message, data=data)

    def referral(message_id: str, service_id: str, doc: etree._Element | None) -> tuple[int, bytes]:
        if doc is None or doc.tag != con("ReferralRequest"):
            return fault("Client", "BAD_REQUEST", "data must hold a ReferralRequest")
        referral_id = text(doc, "referralId", ns=CON_NS)
        case_ref = text(doc, "caseRef", ns=CON_NS)
        if not referral_id or not case_ref or text(doc, "service", ns=CON_NS) != service_id:
            return fault("Client", "BAD_REQUEST", "ReferralRequest needs referralId, caseRef and its service")
        iin = text(doc, "person", "iin", ns=CON_NS) or ""
        names = [text(doc, "person", n, ns=CON_NS) for n in ("surname", "givenName", "patronymic")]
        person = " ".join(n for n in names if n)
        decision = payload("ReferralDecision")
        etree.SubElement(decision, con("referralId")).text = referral_id
        if not is_valid_iin(iin):
            return reply(message_id, "REJECTED", "ИИН не найден в ГБД ФЛ", decision)
        doc_type = text(doc, "documentType", ns=CON_NS)
        if REFERRAL_SERVICES[service_id] == "document":
            if doc_type not in DOCUMENT_TYPES:
                return reply(message_id, "REJECTED", "неизвестный тип документа", decision)
            result, outcome = "DOCUMENT_ISSUED", f"документ выдан ({DOCUMENT_TYPES[doc_type]}): {person}"
        else:
            address = text(doc, "registration", "address", ns=CON_NS) or TEMPORARY_ADDRESS
            result, outcome = "REGISTRATION_DONE", f"временная регистрация оформлена: {person}; {address}"
        etree.SubElement(decision, con("ticketNumber")).text = f"CON-{message_id[:8].upper()}"
        notice = payload("ReferralNotice")
        for tag, value in (("referralId", referral_id), ("caseRef", case_ref), ("service", service_id),
                           ("event", "COMPLETED"), ("result", result), ("outcome", outcome),
                           ("occurredAt", _now().isoformat())):
            etree.SubElement(notice, con(tag)).text = value
        sender.schedule(
            build_send_message(message_id=str(uuid.uuid4()), correlation_id=message_id, service_id=NOTICE_SERVICE,
                               message_date=_now(), sender_id="CON", data=notice),
            {"content-type": CONTENT_TYPE, "soapaction": SOAP_ACTION},
        )
        return reply(message_id, "ACCEPTED", "заявка принята в работу", decision)

    def lookup(message_id: str, service_id: str, doc: etree._Element | None) -> tuple[int, bytes]:
        iin = text(doc, "iin", ns=CON_NS) if doc is not None and doc.tag == con("RecordRequest") else None
        if iin is None or not is_valid_iin(iin):
            return fault("Client", "BAD_REQUEST", "RecordRequest needs a valid IIN")
        if service_id == "CON_IDENTITY_DOCUMENT_STATUS":
            return reply(message_id, "FOUND", "сведения найдены", _record("IdentityDocument", iin, identity_document(iin)))
        record = registration(iin)
        if record is None:
            return reply(message_id, "NOT_FOUND", "сведения о регистрации отсутствуют")
        return reply(message_id, "FOUND", "сведения найдены", _record("Registration", iin, record))

    @app.post(SYNC_PATH)
    async def send_message(request: Request) -> Response:
        body = await request.body()
        try:
            msg = read_envelope(body, what="request")
            if msg.operation != "SendMessage":
                raise WireDecodeError("expected SendMessage")
        except WireDecodeError:
            status, out = fault("Client", "BAD_REQUEST", "the request is not a well-formed SOAP SendMessage")
            return Response(out, status_code=status, media_type=CONTENT_TYPE)
        message_id = text(msg.info, "messageId")
        if message_id is None:
            status, out = fault("Client", "BAD_REQUEST", "requestInfo/messageId is missing")
            return Response(out, status_code=status, media_type=CONTENT_TYPE)
        faulty = await apply_faults(state, message_id, media_type=CONTENT_TYPE)
        if faulty is not None:
            return faulty
        if (again := repeat(state, message_id, media_type=CONTENT_TYPE)) is not None:
            return again
        state.processed[message_id] = state.processed.get(message_id, 0) + 1
        service_id = text(msg.info, "serviceId") or ""
        state.received.append({
            "messageId": message_id, "correlationId": text(msg.info, "correlationId"), "serviceId": service_id,
            "senderId": text(msg.info, "sender", "senderId"),
            "data": _as_dict(msg.data) if msg.data is not None else None,
        })
        if service_id in REFERRAL_SERVICES:
            status, out = referral(message_id, service_id, msg.data)
        elif service_id in LOOKUP_SERVICES:
            status, out = lookup(message_id, service_id, msg.data)
        else:
            status, out = fault("Client", "UNKNOWN_SERVICE", "ЦОН provides no such service")
        return answer(state, message_id, status, out, media_type=CONTENT_TYPE)

    @app.get(SYNC_PATH)
    async def wsdl(request: Request) -> Response:
        if "wsdl" not in request.query_params:
            return Response(status_code=404)
        root = parse_xml((WSDL_DIR / "SyncChannel.wsdl").read_bytes())
        for address in root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
            address.set("location", str(request.base_url).rstrip("/") + SYNC_PATH)
        out = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return slow(Response(out, media_type=CONTENT_TYPE), state)

    @app.get(SYNC_PATH + "{schema}")
    async def schema(schema: str) -> Response:
        files = {p.name: p for p in WSDL_DIR.glob("*.xsd")}
        if schema not in files:
            return Response(status_code=404)
        return Response(files[schema].read_bytes(), media_type=CONTENT_TYPE)

    return app
