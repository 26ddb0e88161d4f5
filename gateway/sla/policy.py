"""Schema and loader of `mappings/sla.yaml`: which event starts a leg, which stops it, and its limit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import Field, model_validator

from gateway.canonical.errors import ConfigError
from gateway.canonical.messages import Domain, ReferralKind, RiskLevel
from gateway.mapping import KindEntry, ReferralKindsFile, _Strict, load_yaml_file

if TYPE_CHECKING:
    from gateway.sla.calendar import WorkingCalendar

StartType = Literal["case.registered", "plan.approved", "risk.detected", "referral.requested"]
# A rejected referral never stops a leg (BRIEF 4), so it is not offered as a stop type.
StopType = Literal["plan.approved", "risk.closed", "referral.requested", "referral.accepted", "referral.completed"]
REFERRAL_STOPS = frozenset({"referral.requested", "referral.accepted", "referral.completed"})
RuleName = str


class StartSpec(_Strict):
    """The event that opens a leg; `domain` and `levels` filter a `risk.detected` body."""

    type: StartType
    domain: Domain | None = None
    levels: tuple[RiskLevel, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _filters_fit_type(self) -> StartSpec:
        if self.type != "risk.detected":
            if self.domain is not None:
                raise ValueError(f"domain: only a risk.detected start has a domain, not {self.type}")
            if self.levels is not None:
                raise ValueError(f"levels: only a risk.detected start has a level, not {self.type}")
        return self


class StopSpec(_Strict):
    """The event that closes a leg: same case, at or after the start, optionally of given kinds / the same risk."""

    type: StopType
    kinds: tuple[ReferralKind, ...] | None = Field(
        None, min_length=1, description="referral kinds that qualify (a reply takes the kind of its request)")
    linked_to_risk: bool = Field(False, description="the stop's risk_id must be the start's risk_id")

    @model_validator(mode="after")
    def _filters_fit_type(self) -> StopSpec:
        if self.kinds is not None and self.type not in REFERRAL_STOPS:
            raise ValueError(f"kinds: only a referral stop has a kind, not {self.type}")
        if self.linked_to_risk and self.type not in REFERRAL_STOPS | {"risk.closed"}:
            raise ValueError(f"linked_to_risk: a {self.type} carries no risk_id")
        return self


class Limit(_Strict):
    """Exactly one of: an exact duration (`hours` or `days`), or `working_days` (end of the Nth working day)."""

    hours: float | None = Field(None, gt=0, le=24 * 366)
    days: float | None = Field(None, gt=0, le=366)
    working_days: int | None = Field(
        None, ge=1, le=60,
        description="deadline = 23:59:59.999 Asia/Almaty of the Nth working day after the local start date")

    @model_validator(mode="after")
    def _exactly_one(self) -> Limit:
        given = [k for k in ("hours", "days", "working_days") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of hours, days, working_days (got {', '.join(given) or 'none'})")
        return self

    @property
    def duration_us(self) -> int | None:
        """The exact duration in microseconds, or None for a working-day limit."""
        if self.hours is not None:
            return round(self.hours * 3_600_000_000)
        if self.days is not None:
            return round(self.days * 86_400_000_000)
        return None


class Rule(_Strict):
    start: StartSpec
    stop: StopSpec
    limit: Limit

    @model_validator(mode="after")
    def _link_needs_a_risk(self) -> Rule:
        if self.stop.linked_to_risk and self.start.type != "risk.detected":
            raise ValueError(f"stop.linked_to_risk: the start ({self.start.type}) has no risk_id to link to")
        return self


class SlaPolicy(_Strict):
    version: int = Field(ge=1)
    rules: dict[str, Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> SlaPolicy:
        for name in self.rules:
            if not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*", name):
                raise ValueError(f"rules.{name}: a rule name is lowercase words joined by dots")
        return self


def load_sla_policy(path: Path) -> SlaPolicy:
    """Load and check `sla.yaml`; raise ConfigError naming the file and each bad field."""
    errors: list[str] = []
    policy = load_yaml_file(path, SlaPolicy, errors)
    if errors:
        raise ConfigError("invalid mappings:\n" + "\n".join(f"  {e}" for e in errors))
    return policy  # type: ignore[return-value]


class SlaConfig(NamedTuple):
    policy: SlaPolicy
    calendar: WorkingCalendar
    kinds: dict[str, KindEntry]


def load_sla_config(directory: Path) -> SlaConfig:
    """sla.yaml, calendar-kz.yaml and referral-kinds.yaml of a mappings directory, every error listed at once."""
    from gateway.sla.calendar import CalendarOverrides, WorkingCalendar

    errors: list[str] = []
    policy = load_yaml_file(directory / "sla.yaml", SlaPolicy, errors)
    overrides = load_yaml_file(directory / "calendar-kz.yaml", CalendarOverrides, errors)
    kinds = load_yaml_file(directory / "referral-kinds.yaml", ReferralKindsFile, errors)
    if policy is not None and kinds is not None:
        for name, rule in policy.rules.items():  # type: ignore[attr-defined]
            for i, kind in enumerate(rule.stop.kinds or ()):
                if kind not in kinds.kinds:  # type: ignore[attr-defined]
                    errors.append(f"{directory / 'sla.yaml'}: rules.{name}.stop.kinds.{i}: referral kind {kind!r}"
                                  " is not in referral-kinds.yaml")
    if errors:
        raise ConfigError("invalid mappings:\n" + "\n".join(f"  {e}" for e in errors))
    return SlaConfig(policy, WorkingCalendar(overrides=overrides), dict(kinds.kinds))  # type: ignore[arg-type, union-attr]
