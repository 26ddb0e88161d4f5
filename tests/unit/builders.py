"""Canonical messages and mappings for the unit tests: the shipped mappings, messages built with valid content."""

from __future__ import annotations

import random
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from gateway.canonical.messages import AnyMessage, parse_message
from gateway.config import MAPPINGS as MAPPINGS_DIR
from gateway.mapping import Instance, Mappings, load_mappings
from gateway.samples import make_iin
from tests.fakes import T0

MAPPINGS: Mappings = load_mappings(MAPPINGS_DIR)
IIN = make_iin(random.Random(7), date(1990, 5, 17))
OCCURRED = T0 - timedelta(minutes=1)


def instance(name: str, **changes: Any) -> Instance:
    """A shipped instance, with `changes` (log_bodies=False, retry=RetryPolicy(...)) applied."""
    inst = MAPPINGS.instance(name)
    assert inst is not None, name
    return inst.model_copy(update=changes) if changes else inst


def with_instances(mappings: Mappings, *instances: Instance) -> Mappings:
    """The mappings with these instances in place of the shipped ones of the same name."""
    by_name = {i.name: i for i in instances}
    counterparts = mappings.counterparts.model_copy(update={
        "instances": tuple(by_name.get(i.name, i) for i in mappings.counterparts.instances)})
    return mappings.model_copy(update={"counterparts": counterparts})


def _message(type_: str, case_id: str, body: dict[str, Any], *, message_id: str | None = None,
             occurred_at: datetime = OCCURRED) -> AnyMessage:
    return parse_message({"message_id": message_id or str(uuid.uuid4()), "type": type_, "case_id": case_id,
                          "occurred_at": occurred_at.isoformat(), "body": body})


def case_registered(case_id: str = "35-2026-000001", region: str = "KZ-35", **kw: Any) -> AnyMessage:
    return _message("case.registered", case_id, {
        "region": region,
        "person": {"iin": IIN, "surname": "Ахметова", "given_name": "Айгүл", "birth_date": "1990-05-17",
                   "sex": "female"}}, **kw)


def referral_requested(case_id: str = "35-2026-000001", kind: str = "shelter.placement",
                       referral_id: str = "REF-1", **kw: Any) -> AnyMessage:
    return _message("referral.requested", case_id, {"referral_id": referral_id, "kind": kind}, **kw)


def referral_accepted(case_id: str = "35-2026-000001", referral_id: str = "REF-1", **kw: Any) -> AnyMessage:
    return _message("referral.accepted", case_id, {"referral_id": referral_id}, **kw)


def risk_detected(case_id: str = "35-2026-000001", *, domain: str = "medical", level: str = "R2",
                  trigger: str = "high_medical_need", risk_id: str = "R-1", **kw: Any) -> AnyMessage:
    return _message("risk.detected", case_id, {"risk_id": risk_id, "domain": domain, "level": level,
                                               "trigger": trigger}, **kw)
