"""Pure codec between canonical messages and ЦОН's SOAP 1.1 service behind ШЭП (SyncChannel `SendMessage`).

Wire format (see `wsdl/SyncChannel.wsdl`, `wsdl/SyncChannelTypes.xsd`, `wsdl/ConPayload.xsd`):

- Every exchange is a ШЭП SyncChannel `SendMessage` in the types namespace `TYPES_NS`, POSTed to `SYNC_PATH`
  with `content-type: text/xml; charset=utf-8` and `SOAPAction: SOAP_ACTION`. The envelope's children are
  unqualified (`elementFormDefault="unqualified"`, as ШЭП's own schema).
- `requestInfo`: `messageId` = the canonical message id (a lookup's `request_id`), `correlationId` = the same
  id (the first message of a ШЭП chain correlates to itself), `serviceId` from the code tables `con.service`
  (referral kind) or `con.lookup` (record kind), `messageDate` = the encode context's clock, `sender` =
  {`senderId` `SENDER_ID`, `password` empty}: counterpart instances have no ШЭП credential fields, and the
  real credential is the XML signature over the body (issue 4), so the password element stays empty.
  One property, `payloadVersion` = `PAYLOAD_VERSION`.
- `requestData/data` holds one element of ours in `CON_NS`: `ReferralRequest` (referral id, service, case
  ref, risk ref, request time, region, the person from the case registration, document type or
  registration host, other details) or `RecordRequest` (IIN, purpose).
- The synchronous answer is `SendMessageResponse/response`: `responseInfo/status/code` says accepted or
  rejected (`con.status`) for a referral, found or not (`con.lookup_status`) for a lookup; `status/message`
  is the rejection reason. `responseData/data` may hold `ReferralDecision` (echoes the referral id) or the
  record (`IdentityDocument`, `Registration`, each echoing the IIN, checked against the lookup).
- Errors are SOAP 1.1 Faults whose `detail` carries `typ:ErrorInfo` {`errorCode`, `errorMessage`, `errorDate`}.
- Completion comes later as a `SendMessage` from ЦОН to the gateway's `/v1/inbound/con`, service
  `CON_REFERRAL_NOTICE` (`con.inbound`), its own `messageId` (a UUID: the canonical message id),
  `correlationId` = the referral request's `messageId`, and a `ReferralNotice` (referral id, case ref,
  service, `event` (`con.event`), `result` (`con.result`), `outcome` or `reason`, `occurredAt`).

No I/O, no clock, no randomness: times come from the contexts, reply ids from `derived_message_id`.
Error messages never carry an IIN (any 12-digit run taken from the wire is masked).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

import orjson
from lxml import etree
from pydantic import ValidationError

from gateway.canonical.errors import WireDecodeError
from gateway.canonical.messages import AnyMessage, CaseRegistered, parse_message
from gateway.mapping import Instance, Mappings, UnknownCode
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
from gateway.xmlsafe import UnsafeXml, parse_xml

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
TYPES_NS = "http://bip.bee.kz/SyncChannel/v10/Types"
INTERFACES_NS = "http://bip.bee.kz/SyncChannel/v10/Interfaces"
CON_NS = "urn:probation-gateway:con:v1"
SYNC_PATH = "/bip-sync-wss-gost/"
SOAP_ACTION = f'"{INTERFACES_NS}/SendMessage"'
CONTENT_TYPE = "text/xml; charset=utf-8"
SENDER_ID = "PROBATION_GW"
PAYLOAD_VERSION = "con/v1"
REFERRAL_KINDS = ("document.restore", "registration.temporary")
RECORD_KINDS = ("identity_document_status", "registration_status")

_ENVELOPE_NSMAP = {"soapenv": SOAP_NS, "typ": TYPES_NS}
_IIN_RUN = re.compile(r"\d{12}")


def _safe(text: str, limit: int = 300) -> str:
    """Text taken from the wire, fit for an error message: any 12-digit run (an IIN) masked, length capped."""
    return _IIN_RUN.sub("************", text)[:limit]


# --------------------------------------------------------------------------------------------- building


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def con(tag: str) -> str:
    """Qualified name of one of our payload elements."""
    return f"{{{CON_NS}}}{tag}"


def payload(tag: str) -> etree._Element:
    """A new payload root element in `CON_NS` (the one element inside `data`)."""
    return etree.Element(con(tag), nsmap={"con": CON_NS})


def _serialize(root: etree._Element) -> bytes:
    try:
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    except ValueError as exc:  # pragma: no cover - values are checked when set
        raise WireDecodeError(f"cannot write XML: {exc}") from exc


def _envelope() -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap=_ENVELOPE_NSMAP)
    _sub(env, f"{{{SOAP_NS}}}Header")
    return env, _sub(env, f"{{{SOAP_NS}}}Body")


def build_send_message(
    *, message_id: str, correlation_id: str | None, service_id: str, message_date: datetime, sender_id: str,
    password: str = "", properties: dict[str, str] | None = None, data: etree._Element | None = None,
) -> bytes:
    """A SyncChannel `SendMessage` request envelope."""
    env, body = _envelope()
    request = _sub(_sub(body, f"{{{TYPES_NS}}}SendMessage"), "request")
    info = _sub(request, "requestInfo")
    _sub(info, "messageId", message_id)
    if correlation_id is not None:
        _sub(info, "correlationId", correlation_id)
    _sub(info, "serviceId", service_id)
    _sub(info, "messageDate", message_date.isoformat())
    sender = _sub(info, "sender")
    _sub(sender, "senderId", sender_id)
    _sub(sender, "password", password)
    for key, value in (properties or {}).items():
        prop = _sub(info, "properties")
        _sub(prop, "key", key)
        _sub(prop, "value", value)
    holder = _sub(_sub(request, "requestData"), "data")
    if data is not None:
        holder.append(data)
    return _serialize(env)


def build_send_message_response(
    *, message_id: str, correlation_id: str | None, response_date: datetime, code: str, message: str,
    data: etree._Element | None = None,
) -> bytes:
    """A SyncChannel `SendMessageResponse` envelope."""
    env, body = _envelope()
    response = _sub(_sub(body, f"{{{TYPES_NS}}}SendMessageResponse"), "response")
    info = _sub(response, "responseInfo")
    _sub(info, "messageId", message_id)
    if correlation_id is not None:
        _sub(info, "correlationId", correlation_id)
    _sub(info, "responseDate", response_date.isoformat())
    status = _sub(info, "status")
    _sub(status, "code", code)
    _sub(status, "message", message)
    holder = _sub(_sub(response, "responseData"), "data")
    if data is not None:
        holder.append(data)
    return _serialize(env)


def build_fault(*, faultcode: str, faultstring: str, error_code: str, error_message: str,
                error_date: datetime) -> bytes:
    """A SOAP 1.1 Fault carrying ШЭП's `ErrorInfo` in its detail. `faultcode` is `Client` or `Server`."""
    env, body = _envelope()
    fault = _sub(body, f"{{{SOAP_NS}}}Fault")
    _sub(fault, "faultcode", f"soapenv:{faultcode}")
    _sub(fault, "faultstring", faultstring)
    info = _sub(_sub(fault, "detail"), f"{{{TYPES_NS}}}ErrorInfo")
    _sub(info, "errorCode", error_code)
    _sub(info, "errorMessage", error_message)
    _sub(info, "errorDate", error_date.isoformat())
    return _serialize(env)


# --------------------------------------------------------------------------------------------- reading


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    return (c for c in parent if isinstance(c.tag, str))


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _ns(el: etree._Element) -> str | None:
    return etree.QName(el).namespace


def child(parent: etree._Element | None, name: str, *, ns: str | None = "") -> etree._Element | None:
    """First element child named `name`. ns="" (default): unqualified or in ШЭП's types namespace
    (tolerant of either form); otherwise exactly that namespace."""
    if parent is None:
        return None
    for c in _elements(parent):
        if _local(c) != name:
            continue
        cns = _ns(c)
        if (ns == "" and cns in (None, TYPES_NS)) or (ns != "" and cns == ns):
            return c
    return None


def text(parent: etree._Element | None, *path: str, ns: str | None = "") -> str | None:
    """Text of the element at `path` below `parent`, stripped; None when absent or empty."""
    el = parent
    for name in path:
        el = child(el, name, ns=ns)
    if el is None or el.text is None or not el.text.strip():
        return None
    return el.text.strip()


def require(parent: etree._Element | None, *path: str, ns: str | None = "", what: str = "") -> str:
    value = text(parent, *path, ns=ns)
    if value is None:
        raise WireDecodeError(f"{what or 'message'}: missing {'/'.join(path)}")
    return value


@dataclass(frozen=True)
class SoapMessage:
    """A parsed SendMessage or SendMessageResponse: its info block and the payload element inside `data`."""

    operation: str  # SendMessage | SendMessageResponse
    info: etree._Element  # requestInfo | responseInfo
    data: etree._Element | None  # first element inside requestData/data or responseData/data


def read_fault(fault: etree._Element) -> tuple[str, str]:
    """(errorCode, errorMessage) of a SOAP Fault, from `detail/ErrorInfo` or faultcode/faultstring."""
    detail = next((c for c in _elements(fault) if _local(c) == "detail"), None)
    info = None
    if detail is not None:
        info = next((d for d in detail.iter() if isinstance(d.tag, str) and _local(d) == "ErrorInfo"), None)
    code = text(info, "errorCode") or text(fault, "faultcode") or "?"
    message = text(info, "errorMessage") or text(fault, "faultstring") or ""
    return code, message


def read_envelope(body: bytes, *, what: str) -> SoapMessage:
    """Parse untrusted bytes (gateway.xmlsafe) as a SOAP 1.1 SendMessage[Response]; a Fault is an error."""
    try:
        root = parse_xml(body)
    except UnsafeXml as exc:
        raise WireDecodeError(f"{what}: {_safe(str(exc))}") from exc
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise WireDecodeError(f"{what}: not a SOAP 1.1 Envelope (root element {_safe(_local(root), 80)})")
    soap_body = child(root, "Body", ns=SOAP_NS)
    op = next(_elements(soap_body), None) if soap_body is not None else None
    if op is None:
        raise WireDecodeError(f"{what}: the SOAP Body is empty or missing")
    if op.tag == f"{{{SOAP_NS}}}Fault":
        code, message = read_fault(op)
        raise WireDecodeError(f"{what}: ЦОН answered a SOAP Fault: {_safe(code, 80)}: {_safe(message)}")
    name = _local(op)
    if name not in ("SendMessage", "SendMessageResponse"):
        raise WireDecodeError(f"{what}: unexpected SOAP operation {_safe(name, 80)}")
    inner, info_name, data_name = (
        ("request", "requestInfo", "requestData") if name == "SendMessage" else
        ("response", "responseInfo", "responseData")
    )
    part = child(op, inner)
    info = child(part, info_name)
    if info is None:
        raise WireDecodeError(f"{what}: missing {inner}/{info_name}")
    holder = child(child(part, data_name), "data")
    data = next(_elements(holder), None) if holder is not None else None
    return SoapMessage(name, info, data)


def _payload(msg: SoapMessage, tag: str, *, what: str, required: bool = True) -> etree._Element | None:
    if msg.data is None:
        if required:
            raise WireDecodeError(f"{what}: no {tag} in data")
        return None
    if msg.data.tag != con(tag):
        raise WireDecodeError(f"{what}: data holds {_safe(_local(msg.data), 80)}, expected {{{CON_NS}}}{tag}")
    return msg.data


def _datetime(value: str, *, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WireDecodeError(f"{what}: not an xs:dateTime") from None
    if parsed.tzinfo is None:
        raise WireDecodeError(f"{what}: a time without an offset")
    return parsed


def _message(data: dict[str, Any], *, what: str) -> AnyMessage:
    try:
        return parse_message(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise WireDecodeError(f"{what} does not make a valid canonical message: {_safe(problems)}") from exc


def _code(mappings: Mappings, table: str, external: str) -> str:
    try:
        return mappings.table(table).canonical(external)
    except UnknownCode as exc:
        raise UnknownCode(_safe(str(exc))) from None


# --------------------------------------------------------------------------------------------- adapter


def _detail_text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class ConAdapter:
    """ЦОН via ШЭП: referrals `document.restore` / `registration.temporary` and two record lookups."""

    counterpart = "con"
    signature_channel: SignatureChannel = "xml"  # SOAP: the signature is an XML signature in the envelope

    # -- referrals

    def encode(
        self, message: AnyMessage, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest:
        if message.type != "referral.requested":
            raise WireDecodeError(f"ЦОН takes no {message.type} messages")
        try:
            return self._encode_referral(message, mappings=mappings, context=context)
        except ValueError as exc:  # lxml refuses control characters XML cannot carry
            raise WireDecodeError(f"the referral cannot be written as XML: {_safe(str(exc))}") from exc

    def _encode_referral(self, message: AnyMessage, *, mappings: Mappings, context: EncodeContext) -> WireRequest:
        kind = message.body.kind
        if kind not in REFERRAL_KINDS:
            raise WireDecodeError(f"ЦОН serves no {kind} referrals")
        case = context.case
        if case is None:
            raise WireDecodeError("a ЦОН referral needs the case registration (the person), which is not known")
        if not isinstance(case, CaseRegistered) or case.case_id != message.case_id:
            raise WireDecodeError("the case registration given belongs to another case")
        service_id = mappings.table("con.service").external(kind)
        person = case.body.person
        details = dict(message.body.details or {})

        doc = payload("ReferralRequest")
        _sub(doc, con("referralId"), message.body.referral_id)
        _sub(doc, con("service"), service_id)
        _sub(doc, con("caseRef"), message.case_id)
        if message.body.risk_id:
            _sub(doc, con("riskRef"), message.body.risk_id)
        _sub(doc, con("requestedAt"), message.occurred_at.isoformat())
        _sub(doc, con("region"), case.body.region)
        p = _sub(doc, con("person"))
        _sub(p, con("iin"), person.iin)
        _sub(p, con("surname"), person.surname)
        _sub(p, con("givenName"), person.given_name)
        if person.patronymic:
            _sub(p, con("patronymic"), person.patronymic)
        _sub(p, con("birthDate"), person.birth_date.isoformat())
        _sub(p, con("sex"), mappings.table("con.sex").external(person.sex))
        if kind == "document.restore":
            doc_type = details.pop("document_type", "identity_card")
            _sub(doc, con("documentType"), mappings.table("con.document_type").external(str(doc_type)))
        else:
            host = details.pop("host_type", "adaptation_centre")
            reg = _sub(doc, con("registration"))
            _sub(reg, con("hostType"), mappings.table("con.host_type").external(str(host)))
            for key, tag in (("host_name", "hostName"), ("address", "address")):
                if details.get(key) not in (None, ""):
                    _sub(reg, con(tag), _detail_text(details.pop(key)))
        for key in sorted(details):
            if details[key] is None:
                continue
            _sub(doc, con("detail"), _detail_text(details[key]), name=str(key))

        body = build_send_message(
            message_id=str(message.message_id), correlation_id=str(message.message_id), service_id=service_id,
            message_date=context.now, sender_id=SENDER_ID, properties={"payloadVersion": PAYLOAD_VERSION},
            data=doc,
        )
        return WireRequest("POST", SYNC_PATH, self._headers(str(message.message_id)), body)

    @staticmethod
    def _headers(message_id: str) -> tuple[tuple[str, str], ...]:
        return (("content-type", CONTENT_TYPE), ("soapaction", SOAP_ACTION), ("x-message-id", message_id))

    def decode_response(
        self, response: WireResponse, *, mappings: Mappings, request: AnyMessage, context: DecodeContext
    ) -> list[AnyMessage]:
        what = "ЦОН answer"
        if request.type != "referral.requested":
            raise WireDecodeError(f"no ЦОН answer is expected to a {request.type} message")
        msg = read_envelope(response.body, what=what)
        if msg.operation != "SendMessageResponse":
            raise WireDecodeError(f"{what}: expected SendMessageResponse")
        correlation = text(msg.info, "correlationId")
        if correlation is not None and correlation != str(request.message_id):
            raise WireDecodeError(f"{what}: correlationId names another request")
        code = require(msg.info, "status", "code", what=what)
        kind = _code(mappings, "con.status", code)
        decision = _payload(msg, "ReferralDecision", what=what, required=False)
        echoed = text(decision, "referralId", ns=CON_NS)
        if echoed is not None and echoed != request.body.referral_id:
            raise WireDecodeError(f"{what}: the decision names another referral")
        body: dict[str, Any] = {"referral_id": request.body.referral_id}
        if kind == "referral.rejected":
            body["reason"] = require(msg.info, "status", "message", what=f"{what} (rejection)")
        responded = text(msg.info, "responseDate")
        occurred = _datetime(responded, what=f"{what}: responseDate") if responded else context.received_at
        return [_message({
            "message_id": str(derived_message_id(request.message_id, kind)), "type": kind,
            "case_id": request.case_id, "occurred_at": occurred.isoformat(), "body": body,
        }, what=what)]

    def decode_callback(self, request: WireRequest, *, mappings: Mappings, context: DecodeContext) -> list[AnyMessage]:
        what = "ЦОН notice"
        msg = read_envelope(request.body, what=what)
        if msg.operation != "SendMessage":
            raise WireDecodeError(f"{what}: expected SendMessage")
        service = require(msg.info, "serviceId", what=what)
        if _code(mappings, "con.inbound", service) != "referral.notice":
            raise WireDecodeError(f"{what}: service {_safe(service, 80)} is not a referral notice")
        raw_id = require(msg.info, "messageId", what=what)
        try:
            message_id = uuid.UUID(raw_id)
        except ValueError:
            raise WireDecodeError(f"{what}: messageId is not a UUID") from None
        notice = _payload(msg, "ReferralNotice", what=what)
        kind = _code(mappings, "con.event", require(notice, "event", ns=CON_NS, what=what))
        body: dict[str, Any] = {"referral_id": require(notice, "referralId", ns=CON_NS, what=what)}
        if kind == "referral.completed":
            result = text(notice, "result", ns=CON_NS)
            if result is not None:
                _code(mappings, "con.result", result)  # an unknown result code is refused
            outcome = text(notice, "outcome", ns=CON_NS)
            if outcome is not None:
                body["outcome"] = outcome
        else:
            body["reason"] = require(notice, "reason", ns=CON_NS, what=f"{what} (refusal)")
        occurred = _datetime(require(notice, "occurredAt", ns=CON_NS, what=what), what=f"{what}: occurredAt")
        return [_message({
            "message_id": str(message_id), "type": kind,
            "case_id": require(notice, "caseRef", ns=CON_NS, what=what),
            "occurred_at": occurred.isoformat(), "body": body,
        }, what=what)]

    # -- record lookups (the document-request flow)

    def encode_lookup(
        self, lookup: RecordLookup, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest:
        service_id = mappings.table("con.lookup").external(lookup.record_kind)
        doc = payload("RecordRequest")
        _sub(doc, con("iin"), lookup.iin)
        _sub(doc, con("purpose"), lookup.purpose)
        body = build_send_message(
            message_id=lookup.request_id, correlation_id=lookup.request_id, service_id=service_id,
            message_date=context.now, sender_id=SENDER_ID, properties={"payloadVersion": PAYLOAD_VERSION},
            data=doc,
        )
        return WireRequest("POST", SYNC_PATH, self._headers(lookup.request_id), body)

    def decode_lookup(
        self, response: WireResponse, *, mappings: Mappings, lookup: RecordLookup, context: DecodeContext
    ) -> RecordResult:
        what = f"ЦОН {lookup.record_kind} answer"
        if lookup.record_kind not in RECORD_KINDS:
            raise WireDecodeError(f"ЦОН keeps no {lookup.record_kind} records")
        msg = read_envelope(response.body, what=what)
        if msg.operation != "SendMessageResponse":
            raise WireDecodeError(f"{what}: expected SendMessageResponse")
        correlation = text(msg.info, "correlationId")
        if correlation is not None and correlation != lookup.request_id:
            raise WireDecodeError(f"{what}: correlationId names another request")
        found = _code(mappings, "con.lookup_status", require(msg.info, "status", "code", what=what)) == "found"
        responded = text(msg.info, "responseDate")
        as_of = _datetime(responded, what=f"{what}: responseDate") if responded else context.received_at
        if not found:
            return RecordResult(lookup.record_kind, False, {}, as_of)
        tag = "IdentityDocument" if lookup.record_kind == "identity_document_status" else "Registration"
        record = _payload(msg, tag, what=what)
        if require(record, "iin", ns=CON_NS, what=what) != lookup.iin:
            raise WireDecodeError(f"{what}: the record belongs to another person")
        data: dict[str, object] = {}
        if tag == "IdentityDocument":
            data["document_type"] = _code(mappings, "con.document_type",
                                          require(record, "documentType", ns=CON_NS, what=what))
            data["state"] = _code(mappings, "con.document_state", require(record, "state", ns=CON_NS, what=what))
            fields = (("number", "number"), ("issuedOn", "issued_on"), ("validUntil", "valid_until"),
                      ("issuer", "issuer"))
        else:
            data["state"] = _code(mappings, "con.registration_state",
                                  require(record, "state", ns=CON_NS, what=what))
            fields = (("region", "region"), ("address", "address"), ("validUntil", "valid_until"))
        for tag_name, key in fields:
            value = text(record, tag_name, ns=CON_NS)
            if value is not None:
                data[key] = value
        return RecordResult(lookup.record_kind, True, data, as_of)
