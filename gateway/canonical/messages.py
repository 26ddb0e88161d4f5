"""Canonical messages (BRIEF section 3): one envelope, a typed body per message type."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Literal, Union

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
)
from pydantic_core import PydanticCustomError

from gateway.canonical.errors import MessageFromFuture
from gateway.canonical.iin import RULES, iin_problem

MAX_FUTURE_SKEW = timedelta(minutes=5)

Domain = Literal["legal", "housing", "economic", "medical", "institutional"]
RiskLevel = Literal["R0", "R1", "R2", "R3"]
ReferralKind = Literal[
    "document.restore",
    "registration.temporary",
    "shelter.placement",
    "employment.track",
    "social.contract",
    "health.attachment",
    "health.screening",
    "psych.support",
]
MessageType = Literal[
    "case.registered",
    "plan.approved",
    "risk.detected",
    "risk.closed",
    "referral.requested",
    "referral.accepted",
    "referral.completed",
    "referral.rejected",
    "escalation.raised",
]
REPLY_TYPES = frozenset({"referral.accepted", "referral.completed", "referral.rejected"})

# Identifiers and names: printable characters only. No C0/C1 control, no zero-width, bidirectional or
# line-separator character anywhere (they hide what an auditor reads), no space at either end. Spelled with
# explicit ranges so the pattern means the same in JSON Schema (ECMA 262) and in pydantic (Rust regex).
_HIDDEN = r"\x00-\x1F\x7F-\x9F\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF"
PRINTABLE = rf"^[^{_HIDDEN}\x20](?:[^{_HIDDEN}]*[^{_HIDDEN}\x20])?$"
# Free text keeps tabs and line breaks, nothing else that is a control character.
TEXT = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"
_PRINTABLE, _TEXT = re.compile(PRINTABLE), re.compile(TEXT)
PRINTABLE_RULE = "printable characters only: no control, zero-width or bidirectional character, no space at either end"
TEXT_RULE = "text: no control character other than tab and line breaks"


def check_printable(value: str) -> str:
    if not _PRINTABLE.match(value):
        raise PydanticCustomError("printable", "must be " + PRINTABLE_RULE)
    return value


def check_text(value: str) -> str:
    if not _TEXT.match(value):
        raise PydanticCustomError("text", "must be " + TEXT_RULE)
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(check_printable),
               Field(description="an identifier: 1-128 " + PRINTABLE_RULE, json_schema_extra={"pattern": PRINTABLE})]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(check_text),
                 Field(description="1-4000 characters of " + TEXT_RULE, json_schema_extra={"pattern": TEXT})]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(check_printable),
                 Field(description="1-200 " + PRINTABLE_RULE, json_schema_extra={"pattern": PRINTABLE})]
Region = Annotated[str, StringConstraints(pattern=r"^KZ-[0-9]{2}$")]

# Times: RFC 3339 date-time strings with an offset, and nothing else a lenient parser would take (a number of
# seconds, a space for the T, an offset without a colon). The gateway holds nothing from before 2000.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
TIMESTAMP_RULE = ("an RFC 3339 date-time with an offset (2026-03-02T09:30:00+05:00), from 2000-01-01T00:00:00Z "
                  "up to 9000-01-01T00:00:00Z; a number is not a date")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,9})?"
                      r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError("rfc3339_date_time", "must be " + TIMESTAMP_RULE)
    return value


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise PydanticCustomError("date_time_range", "must be " + TIMESTAMP_RULE)
    return value


def _full_date(value: object) -> object:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _FULL_DATE.fullmatch(value):
        raise PydanticCustomError("rfc3339_full_date", "must be an RFC 3339 full-date (1990-01-31)")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_range)]
CalendarDate = Annotated[date, BeforeValidator(_full_date)]

IIN_RULE = ("12 digits: date of birth YYMMDD, a century digit 1-6, four serial digits and a check digit (the first "
            "11 digits weighted 1..11 modulo 11; if 10, weighted 3..11,1,2 modulo 11; if 10 again, or all zero, "
            "the number is not an IIN)")


def _check_iin(value: str) -> str:
    rule = iin_problem(value)
    if rule is not None:
        # The value itself is personal data: never echo it; say which rule it broke.
        raise PydanticCustomError("iin_" + rule.replace("-", "_"), "not a valid IIN: {rule}", {"rule": RULES[rule]})
    return value


IIN = Annotated[str, AfterValidator(_check_iin),
                Field(description="the person's IIN: " + IIN_RULE,
                      json_schema_extra={"pattern": r"^[0-9]{12}$", "format": "kz-iin"})]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    iin: IIN
    surname: Name
    given_name: Name
    patronymic: Name | None = None
    birth_date: CalendarDate
    sex: Literal["female", "male"]


class CaseRegisteredBody(_Model):
    region: Region
    person: Person
    release_date: CalendarDate | None = None
    has_minor_children: StrictBool | None = None


class PlanApprovedBody(_Model):
    plan_id: Id


class RiskDetectedBody(_Model):
    risk_id: Id
    domain: Domain
    level: RiskLevel
    trigger: Id


class RiskClosedBody(_Model):
    risk_id: Id


class ReferralRequestedBody(_Model):
    referral_id: Id
    kind: ReferralKind
    risk_id: Id | None = None
    details: dict[str, object] | None = None


class ReferralAcceptedBody(_Model):
    referral_id: Id


class ReferralCompletedBody(_Model):
    referral_id: Id
    outcome: Text | None = None


class ReferralRejectedBody(_Model):
    referral_id: Id
    reason: Text


RecordKind = Literal["identity_document_status", "registration_status", "osms_status", "phc_attachment",
                     "employment_status"]


class DocumentReadyBody(_Model):
    """The outcome of a document request, pushed to the Probation IS; made only by the gateway."""

    request_id: uuid.UUID
    record_kind: RecordKind
    status: Literal["found", "not_found", "failed"]
    as_of: AwareDatetime | None = None  # when the counterpart's record was current
    record: dict[str, object] | None = None
    reason: Text | None = None


class AlertItem(_Model):
    """One alert in a notification, as the gateway's alert monitor keeps it (never personal data)."""

    alert_id: int
    subject: Annotated[str, StringConstraints(min_length=1, max_length=400)]
    state: Literal["firing", "acknowledged", "resolved"]
    severity: Literal["warning", "critical"]
    summary: Text
    count: int = Field(ge=0)
    started_at: AwareDatetime
    resolved_at: AwareDatetime | None = None


class AlertNotificationBody(_Model):
    """A grouped notification of one alert rule's changes; made only by the gateway, sent to its webhooks."""

    rule: Id
    channels: tuple[Id, ...] = Field(description="the webhook channels (alerts.yaml) it is delivered to")
    count: int = Field(ge=0, description="the alerts' counts added up (500 dead letters: 500)")
    alerts: tuple[AlertItem, ...] = Field(min_length=1)


class EscalationRaisedBody(_Model):
    referral_id: Id | None = None
    rule: Id
    deadline_at: Timestamp
    reason: Text


class _Envelope(_Model):
    message_id: uuid.UUID
    case_id: Id
    occurred_at: Timestamp = Field(description="business time at the source: " + TIMESTAMP_RULE + "; at most "
                                               "5 minutes ahead of the gateway's clock")

    def content_hash(self) -> str:
        """Hash of the normalised content: the same message re-sent with other whitespace is the same."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def to_json(self) -> bytes:
        data = self.model_dump(mode="json", exclude_none=True)
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson stops at 64-bit integers; free-form `details` may hold larger ones
            return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


class CaseRegistered(_Envelope):
    type: Literal["case.registered"]
    body: CaseRegisteredBody


class PlanApproved(_Envelope):
    type: Literal["plan.approved"]
    body: PlanApprovedBody


class RiskDetected(_Envelope):
    type: Literal["risk.detected"]
    body: RiskDetectedBody


class RiskClosed(_Envelope):
    type: Literal["risk.closed"]
    body: RiskClosedBody


class ReferralRequested(_Envelope):
    type: Literal["referral.requested"]
    body: ReferralRequestedBody


class ReferralAccepted(_Envelope):
    type: Literal["referral.accepted"]
    body: ReferralAcceptedBody


class ReferralCompleted(_Envelope):
    type: Literal["referral.completed"]
    body: ReferralCompletedBody


class ReferralRejected(_Envelope):
    type: Literal["referral.rejected"]
    body: ReferralRejectedBody


class EscalationRaised(_Envelope):
    type: Literal["escalation.raised"]
    body: EscalationRaisedBody


CanonicalMessage = Annotated[
    Union[
        CaseRegistered,
        PlanApproved,
        RiskDetected,
        RiskClosed,
        ReferralRequested,
        ReferralAccepted,
        ReferralCompleted,
        ReferralRejected,
        EscalationRaised,
    ],
    Field(discriminator="type"),
]
class DocumentReady(_Envelope):
    type: Literal["document.ready"]
    body: DocumentReadyBody


class AlertNotification(_Envelope):
    type: Literal["alert.notification"]
    body: AlertNotificationBody


AnyMessage = Union[
    CaseRegistered,
    PlanApproved,
    RiskDetected,
    RiskClosed,
    ReferralRequested,
    ReferralAccepted,
    ReferralCompleted,
    ReferralRejected,
    EscalationRaised,
    DocumentReady,
    AlertNotification,
]

# What the store may hold: the clients' types (CanonicalMessage) plus those only the gateway makes.
_adapter: TypeAdapter[AnyMessage] = TypeAdapter(Annotated[AnyMessage, Field(discriminator="type")])


def parse_message(data: bytes | str | dict) -> AnyMessage:
    """Validate raw JSON (or a decoded dict) into the typed canonical message."""
    if isinstance(data, dict):
        return _adapter.validate_python(data)
    return _adapter.validate_json(data)


def check_not_in_future(message: AnyMessage, *, now: datetime) -> None:
    if message.occurred_at - now > MAX_FUTURE_SKEW:
        raise MessageFromFuture(
            f"occurred_at is {(message.occurred_at - now).total_seconds():.0f} s ahead of the gateway clock;"
            f" at most {int(MAX_FUTURE_SKEW.total_seconds())} s is allowed",
        )


def utc(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc)
