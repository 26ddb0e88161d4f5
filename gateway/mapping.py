"""Schemas and loader of the YAML files in `mappings/`: checked whole at start-up, file and field named."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from gateway.canonical.errors import ConfigError
from gateway.canonical.messages import Domain, ReferralKind

Counterpart = Literal["con", "mio", "mtszn", "health", "probation"]
RETRYABLE_STATUSES = (408, 429, 502, 503, 504)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    max_attempts: int = Field(8, ge=1, le=100)
    base_delay_s: float = Field(0.5, gt=0, le=3600)
    max_delay_s: float = Field(300.0, gt=0, le=86400)
    deadline_s: float = Field(86400.0, gt=0, description="dead-letter when the first attempt is older than this")
    retry_after_max_s: float = Field(600.0, ge=0, description="a counterpart's Retry-After is clamped to this")
    retry_statuses: tuple[int, ...] = RETRYABLE_STATUSES


class BreakerPolicy(_Strict):
    failure_threshold: int = Field(5, ge=1, le=1000)
    reset_after_s: float = Field(30.0, gt=0, le=3600)


class Instance(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$")
    counterpart: Counterpart
    regions: tuple[str, ...] = Field(
        ("*",), description="ISO 3166-2:KZ codes this instance serves; '*' serves every region"
    )
    role: Literal["service", "leadership"] = "service"
    base_url: HttpUrl
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_in_flight: int = Field(32, ge=1, le=1024)
    enabled: bool = True
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    @property
    def url(self) -> str:
        return str(self.base_url).rstrip("/")


class CounterpartsFile(_Strict):
    version: int = Field(ge=1)
    instances: tuple[Instance, ...]

    @model_validator(mode="after")
    def _unique(self) -> "CounterpartsFile":
        seen: set[str] = set()
        served: set[tuple[str, str, str]] = set()
        for i, inst in enumerate(self.instances):
            if inst.name in seen:
                raise ValueError(f"instances.{i}.name: duplicate instance name {inst.name!r}")
            seen.add(inst.name)
            for region in inst.regions:
                key = (inst.counterpart, inst.role, region)
                if key in served:
                    raise ValueError(
                        f"instances.{i}.regions: region {region!r} already served by another"
                        f" {inst.counterpart} {inst.role} instance"
                    )
                served.add(key)
        return self


class KindEntry(_Strict):
    counterpart: Counterpart
    domain: Domain


class ReferralKindsFile(_Strict):
    version: int = Field(ge=1)
    kinds: dict[ReferralKind, KindEntry]


class Mappings(_Strict):
    """Every mapping file, loaded and checked together."""

    kinds: ReferralKindsFile
    counterparts: CounterpartsFile

    def instance(self, name: str) -> Instance | None:
        return next((i for i in self.counterparts.instances if i.name == name), None)


_FILES: dict[str, tuple[str, type[BaseModel]]] = {
    "kinds": ("referral-kinds.yaml", ReferralKindsFile),
    "counterparts": ("counterparts.yaml", CounterpartsFile),
}


def _load_file(path: Path, schema: type[BaseModel], errors: list[str]) -> BaseModel | None:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        errors.append(f"{path}: file is missing")
        return None
    except yaml.YAMLError as exc:
        errors.append(f"{path}: not valid YAML: {exc}")
        return None
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            errors.append(f"{path}: {where}: {err['msg']}")
        return None


def load_mappings(directory: Path, *, counterparts_file: Path | None = None) -> Mappings:
    """Load every mapping file; raise ConfigError listing each bad file and field."""
    errors: list[str] = []
    loaded: dict[str, BaseModel | None] = {}
    for key, (filename, schema) in _FILES.items():
        path = counterparts_file if key == "counterparts" and counterparts_file else directory / filename
        loaded[key] = _load_file(path, schema, errors)
    if errors:
        raise ConfigError("invalid mappings:\n" + "\n".join(f"  {e}" for e in errors))
    return Mappings.model_validate({k: v for k, v in loaded.items()})
