"""Canonical messages (BRIEF section 3): one envelope, a typed body per message type."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Literal, Union

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
)

from gateway.canonical.errors import MessageFromFuture
from gateway.canonical.iin import is_valid_iin

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

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Region = Annotated[str, StringConstraints(pattern=r"^KZ-\d{2}$")]


def _check_iin(value: str) -> str:
    if not is_valid_iin(value):
        # The value itself is personal data: never echo it.
        raise ValueError("not a valid IIN (12 digits with a correct check digit)")
    return value


IIN = Annotated[str, StringConstraints(min_length=12, max_length=12), AfterValidator(_check_iin)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    iin: IIN
    surname: Name
    given_name: Name
    patronymic: Name | None = None
    birth_date: date
    sex: Literal["female", "male"]


class CaseRegisteredBody(_Model):
    region: Region
    person: Person
    release_date: date | None = None
    has_minor_children: bool | None = None


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
    deadline_at: AwareDatetime
    reason: Text


class _Envelope(_Model):
    message_id: uuid.UUID
    case_id: Id
    occurred_at: AwareDatetime = Field(description="RFC 3339 with an explicit offset: business time at the source")

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
