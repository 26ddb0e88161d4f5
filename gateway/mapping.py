"""Schemas and loader of the YAML files in `mappings/`: checked whole at start-up, file and field named."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, PrivateAttr, ValidationError, model_validator

from gateway.canonical.errors import ConfigError, WireDecodeError
from gateway.canonical.messages import Domain, RecordKind, ReferralKind, RiskLevel

Counterpart = Literal["con", "mio", "mtszn", "health", "probation"]
# What the delivery worker sends to: the counterparts, and the alert webhooks of alerts.yaml.
OutboundCounterpart = Literal["con", "mio", "mtszn", "health", "probation", "webhook"]
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
    counterpart: OutboundCounterpart
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
    keys: tuple[str, ...] = Field(
        (), description="the instance's pinned keys, each a file (relative to this file) or inline: PEM "
                        "certificate, PEM public key or JWK; its responses and callbacks must verify with one"
    )
    revoked_keys: tuple[str, ...] = Field(
        (), description="SHA-256 fingerprints of pinned certificates (or RFC 7638 thumbprints of pinned keys) "
                        "that no longer verify: kept pinned so a refusal says revoked, not unknown"
    )
    log_bodies: bool = Field(
        True, description="keep the wire bytes in the exchange log; false: metadata-only, only their SHA-256")
    mapping_version: int | None = Field(
        None, ge=1, description="the version of the counterpart's code tables this instance speaks: "
                                "mappings/codes/<counterpart>.yaml or codes/versions/<counterpart>.v<N>.yaml; "
                                "none: the current file")
    require_signatures: bool = Field(
        True, description="refuse the instance's unsigned responses and callbacks; false only for a legacy "
                          "system that cannot sign (its traffic is then logged as unverified)"
    )

    @model_validator(mode="after")
    def _pinned(self) -> "Instance":
        if self.require_signatures and not self.keys:
            raise ValueError("keys: an instance that must sign (require_signatures) needs at least one pinned key")
        return self

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
            if inst.counterpart == "webhook":
                raise ValueError(f"instances.{i}.counterpart: alert webhooks are channels in alerts.yaml")
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


class UnknownCode(WireDecodeError):
    """A code no table entry maps (and the table names no default)."""


class CodeTable(_Strict):
    """Canonical value <-> a counterpart's code; both directions must be unambiguous."""

    description: str = ""
    codes: dict[str, str]
    default: str | None = Field(None, description="canonical value for an external code the table does not list")
    name: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _one_to_one(self) -> "CodeTable":
        seen: dict[str, str] = {}
        for canonical, external in self.codes.items():
            if external in seen:
                raise ValueError(f"codes.{canonical}: code {external!r} is also used for {seen[external]!r}")
            seen[external] = canonical
        if self.default is not None and self.default not in self.codes:
            raise ValueError(f"default: {self.default!r} is not one of this table's canonical values")
        return self

    def external(self, canonical: str) -> str:
        try:
            return self.codes[canonical]
        except KeyError:
            raise UnknownCode(f"table {self.name}: no code for {canonical!r}") from None

    def canonical(self, external: str) -> str:
        for key, value in self.codes.items():
            if value == external:
                return key
        if self.default is not None:
            return self.default
        raise UnknownCode(f"table {self.name}: unknown code {external!r}")


class CodesFile(_Strict):
    version: int = Field(ge=1)
    tables: dict[str, CodeTable]


class MatrixRule(_Strict):
    """Risk in `domain` at one of `levels` with one of `triggers` -> these referrals."""

    domain: Domain
    levels: tuple[RiskLevel, ...] = Field(min_length=1)
    triggers: tuple[str, ...] = Field(min_length=1)
    referrals: tuple[ReferralKind, ...] = Field(min_length=1)


class RoutingMatrixFile(_Strict):
    version: int = Field(ge=1)
    rules: tuple[MatrixRule, ...]

    def referrals_for(self, *, domain: str, level: str, trigger: str) -> list[str]:
        kinds: list[str] = []
        for rule in self.rules:
            if rule.domain == domain and level in rule.levels and trigger in rule.triggers:
                kinds.extend(k for k in rule.referrals if k not in kinds)
        return kinds


LOOKUP_COUNTERPARTS = ("con", "health", "mtszn")


class DocumentKind(_Strict):
    """One kind of record the Probation IS may request: who keeps it, how long a copy stays valid, who reads it."""

    counterpart: Literal["con", "health", "mtszn"]
    validity_s: float = Field(gt=0, le=31 * 86400, description="a stored copy is served without asking for this long")
    readers: tuple[Literal["system", "auditor"], ...] = Field(
        ("system",), min_length=1, description="roles allowed to receive this kind of record")
    description: str = ""


class DocumentKindsFile(_Strict):
    version: int = Field(ge=1)
    records: dict[RecordKind, DocumentKind]


AlertRule = Literal["sla_overdue", "dead_letter", "circuit_open", "backlog_age", "certificate_expiry",
                    "checkpoint_signing", "chain_verification"]
ALERT_RULES: tuple[str, ...] = get_args(AlertRule)
_ADDRESS = r"^[^@\s<>,]+@[^@\s<>,]+$"


class AlertThresholds(_Strict):
    circuit_open_s: float = Field(300.0, gt=0, description="an instance's circuit open this long (reopened by "
                                                           "failed probes, never closed) raises circuit_open")
    backlog_age_s: float = Field(1800.0, gt=0, description="the oldest delivery still waiting for an instance "
                                                           "older than this raises backlog_age")
    certificate_days: float = Field(60.0, gt=0, description="a pinned or own certificate expiring within this "
                                                            "many days raises certificate_expiry (critical once "
                                                            "expired)")
    dead_letter_quiet_s: float = Field(900.0, gt=0, description="a dead_letter alert resolves once its instance "
                                                                "had no new dead letter for this long")


class AlertGrouping(_Strict):
    wait_s: float = Field(30.0, ge=0, description="a rule's changes go out in one notification once none came "
                                                  "for this long (a storm settles first)")
    max_wait_s: float = Field(300.0, gt=0, description="...and at the latest this long after the first change")


class WebhookChannel(_Strict):
    """A JSON POST signed with the gateway's key (RFC 9421), sent through the outbox like any delivery."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$")
    type: Literal["webhook"]
    url: HttpUrl
    rules: tuple[AlertRule, ...] = Field((), description="the rules sent here; empty: every rule")
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_in_flight: int = Field(4, ge=1, le=64)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    def instance(self) -> Instance:
        """The channel as the delivery worker sees an instance: same retry, breaker and signing path."""
        return Instance(name=self.name, counterpart="webhook", base_url=self.url, timeout_s=self.timeout_s,
                        max_in_flight=self.max_in_flight, retry=self.retry, breaker=self.breaker,
                        require_signatures=False)


class EmailChannel(_Strict):
    """E-mail over SMTP with TLS (STARTTLS, or implicit TLS on 465); credentials come from the settings."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$")
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["starttls", "implicit"] = "starttls"
    sender: str = Field(pattern=_ADDRESS, description="the From address")
    to: tuple[Annotated[str, Field(pattern=_ADDRESS)], ...] = Field(min_length=1)
    ca_file: str | None = Field(None, description="PEM file of the CAs trusted for the server's certificate "
                                                  "(relative to this file); none: the system's")
    rules: tuple[AlertRule, ...] = Field((), description="the rules sent here; empty: every rule")
    timeout_s: float = Field(30.0, gt=0, le=300)
    retry: RetryPolicy = RetryPolicy(max_attempts=20, base_delay_s=5.0, max_delay_s=600.0)


AlertChannel = Annotated[Union[WebhookChannel, EmailChannel], Field(discriminator="type")]


class AlertsFile(_Strict):
    version: int = Field(ge=1)
    thresholds: AlertThresholds = AlertThresholds()
    grouping: AlertGrouping = AlertGrouping()
    disabled_rules: tuple[AlertRule, ...] = ()
    channels: tuple[AlertChannel, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> "AlertsFile":
        seen: set[str] = set()
        for i, channel in enumerate(self.channels):
            if channel.name in seen:
                raise ValueError(f"channels.{i}.name: duplicate channel name {channel.name!r}")
            seen.add(channel.name)
        return self


class Mappings(_Strict):
    """Every mapping file, loaded and checked together."""

    kinds: ReferralKindsFile
    counterparts: CounterpartsFile
    matrix: RoutingMatrixFile
    documents: DocumentKindsFile
    alerts: AlertsFile = AlertsFile(version=1)
    codes: dict[str, CodeTable] = Field(default_factory=dict)
    # code-file stem (a counterpart) -> version -> its tables: the current file's and those in codes/versions/
    code_versions: dict[str, dict[int, dict[str, CodeTable]]] = Field(default_factory=dict)
    _views: dict[tuple[str, int], "Mappings"] = PrivateAttr(default_factory=dict)
    _channels: tuple[Instance, ...] | None = PrivateAttr(default=None)

    def instance(self, name: str) -> Instance | None:
        """A counterpart instance, or an alert webhook channel (which the delivery worker sends to as well)."""
        return next((i for i in self.outbound_instances if i.name == name), None)

    def counterpart_instance(self, name: str) -> Instance | None:
        """A counterpart instance only: what administrators configure (webhooks live in alerts.yaml)."""
        return next((i for i in self.counterparts.instances if i.name == name), None)

    @property
    def webhook_instances(self) -> tuple[Instance, ...]:
        if self._channels is None:
            self._channels = tuple(c.instance() for c in self.alerts.channels if isinstance(c, WebhookChannel))
        return self._channels

    @property
    def outbound_instances(self) -> tuple[Instance, ...]:
        """Everything the delivery worker sends to: the counterpart instances, then the alert webhooks."""
        return self.counterparts.instances + self.webhook_instances

    def version_errors(self) -> list[tuple[int, str]]:
        """(instance index, message) for each instance naming a code-table version that is not loaded."""
        out = []
        for i, inst in enumerate(self.counterparts.instances):
            have = self.code_versions.get(inst.counterpart, {})
            if inst.mapping_version is not None and inst.mapping_version not in have:
                out.append((i, f"no version {inst.mapping_version} of the {inst.counterpart} code tables "
                               f"(loaded: {', '.join(map(str, sorted(have))) or 'none'})"))
        return out

    def for_instance(self, inst: Instance) -> "Mappings":
        """The mappings as `inst` speaks them: its counterpart's tables at the instance's mapping_version."""
        version = inst.mapping_version
        if version is None:
            return self
        key = (inst.counterpart, version)
        view = self._views.get(key)
        if view is None:
            tables = self.code_versions.get(inst.counterpart, {}).get(version)
            if tables is None:
                raise UnknownCode(f"no version {version} of the {inst.counterpart} code tables")
            view = self.model_copy(update={"codes": {**self.codes, **tables}})
            self._views[key] = view
        return view

    def table(self, name: str) -> CodeTable:
        try:
            return self.codes[name]
        except KeyError:
            raise UnknownCode(f"no code table {name!r} in mappings/codes") from None


_FILES: dict[str, tuple[str, type[BaseModel]]] = {
    "kinds": ("referral-kinds.yaml", ReferralKindsFile),
    "counterparts": ("counterparts.yaml", CounterpartsFile),
    "matrix": ("routing-matrix.yaml", RoutingMatrixFile),
    "documents": ("document-requests.yaml", DocumentKindsFile),
    "alerts": ("alerts.yaml", AlertsFile),
}


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
# Dates stay text for the schemas to check: PyYAML's own conversion of an impossible date (2026-13-01)
# raises a ValueError that names no field; pydantic names it.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml_file(path: Path, schema: type[BaseModel], errors: list[str]) -> BaseModel | None:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (safe loader)
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


def _cross_check(directory: Path, loaded: dict[str, Any], errors: list[str], *,
                 alerts_path: Path | None = None) -> None:
    """References between files: every name used in one file must exist in the file that defines it."""
    kinds: ReferralKindsFile | None = loaded.get("kinds")
    matrix: RoutingMatrixFile | None = loaded.get("matrix")
    alerts: AlertsFile | None = loaded.get("alerts")
    counterparts: CounterpartsFile | None = loaded.get("counterparts")
    alerts_path = alerts_path or directory / "alerts.yaml"
    if alerts is not None:
        names = {i.name for i in counterparts.instances} if counterparts else set()
        for i, channel in enumerate(alerts.channels):
            if channel.name in names:
                errors.append(f"{alerts_path}: channels.{i}.name: {channel.name!r} is also a counterpart instance")
            if isinstance(channel, EmailChannel) and channel.ca_file is not None:
                if not (alerts_path.parent / channel.ca_file).is_file():
                    errors.append(f"{alerts_path}: channels.{i}.ca_file: no file {channel.ca_file}")
    if kinds and matrix:
        for i, rule in enumerate(matrix.rules):
            for j, kind in enumerate(rule.referrals):
                if kind not in kinds.kinds:
                    errors.append(f"{directory / 'routing-matrix.yaml'}: rules.{i}.referrals.{j}: referral kind"
                                  f" {kind!r} is not in referral-kinds.yaml")
                elif kinds.kinds[kind].domain != rule.domain:
                    errors.append(f"{directory / 'routing-matrix.yaml'}: rules.{i}.referrals.{j}: {kind!r} belongs"
                                  f" to domain {kinds.kinds[kind].domain!r}, not {rule.domain!r}")


def _load_codes(directory: Path, errors: list[str]
                ) -> tuple[dict[str, CodeTable], dict[str, dict[int, dict[str, CodeTable]]]]:
    tables: dict[str, CodeTable] = {}
    origin: dict[str, Path] = {}
    versions: dict[str, dict[int, dict[str, CodeTable]]] = {}
    current: dict[str, int] = {}  # code-file stem -> the version of the file itself
    for path in sorted((directory / "codes").glob("*.yaml")):
        loaded = load_yaml_file(path, CodesFile, errors)
        if loaded is None:
            continue
        mine = {}
        for name, table in loaded.tables.items():  # type: ignore[attr-defined]
            if name in tables:
                errors.append(f"{path}: tables.{name}: table also defined in {origin[name]}")
                continue
            tables[name] = mine[name] = table.model_copy(update={"name": name})
            origin[name] = path
        versions.setdefault(path.stem, {})[loaded.version] = mine  # type: ignore[attr-defined]
        current[path.stem] = loaded.version  # type: ignore[attr-defined]
    # Other versions of a counterpart's tables, for instances that still (or already) speak them.
    for path in sorted((directory / "codes" / "versions").glob("*.yaml")):
        stem, _, number = path.stem.rpartition(".v")
        if not stem or not number.isdigit() or stem not in versions:
            errors.append(f"{path}: the name must be <code file>.v<N>.yaml, for a file in mappings/codes")
            continue
        loaded = load_yaml_file(path, CodesFile, errors)
        if loaded is None:
            continue
        if loaded.version != int(number):  # type: ignore[attr-defined]
            errors.append(f"{path}: version: {loaded.version} does not match the file name")  # type: ignore[attr-defined]
            continue
        if loaded.version in versions[stem]:  # type: ignore[attr-defined]
            errors.append(f"{path}: version: {number} is already mappings/codes/{stem}.yaml's version")
            continue
        own = versions[stem][current[stem]]
        mine = {}
        for name, table in loaded.tables.items():  # type: ignore[attr-defined]
            if name not in own:
                errors.append(f"{path}: tables.{name}: not a table of mappings/codes/{stem}.yaml")
                continue
            mine[name] = table.model_copy(update={"name": name})
        versions[stem][int(number)] = mine
    return tables, versions


HOME_MARK = "$GATEWAY_HOME/"


def key_file(name: str, *, counterparts_file: Path, home: Path) -> Path:
    """A pinned key's file: under the state home when named `$GATEWAY_HOME/...`, else beside the counterparts file."""
    if name.startswith(HOME_MARK):
        return (home / name.removeprefix(HOME_MARK)).resolve()
    return (counterparts_file.parent / name).resolve()


def load_mappings(directory: Path, *, counterparts_file: Path | None = None,
                  alerts_file: Path | None = None) -> Mappings:
    """Load every mapping file; raise ConfigError listing each bad file and field."""
    errors: list[str] = []
    loaded: dict[str, Any] = {}
    given = {"counterparts": counterparts_file, "alerts": alerts_file}
    for key, (filename, schema) in _FILES.items():
        path = given.get(key) or directory / filename
        loaded[key] = load_yaml_file(path, schema, errors)
    codes, code_versions = _load_codes(directory, errors)
    _cross_check(directory, loaded, errors, alerts_path=alerts_file)
    if errors:
        raise ConfigError("invalid mappings:\n" + "\n".join(f"  {e}" for e in errors))
    mappings = Mappings(codes=codes, code_versions=code_versions, **loaded)
    path = counterparts_file or directory / "counterparts.yaml"
    errors = [f"{path}: instances.{i}.mapping_version: {msg}" for i, msg in mappings.version_errors()]
    if errors:
        raise ConfigError("invalid mappings:\n" + "\n".join(f"  {e}" for e in errors))
    return mappings
