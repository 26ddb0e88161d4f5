"""Settings from the environment (GATEWAY_*), built on demand, never at import."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE = Path(__file__).resolve().parent
MAPPINGS = PACKAGE / "mappings"  # the example mappings, shipped as package data
ROOT = PACKAGE.parent  # the source checkout (development commands and tests only; absent from an install)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    # Declared first: the defaults of the paths below are made from it.
    home: Path = Field(Path("var"), description="the one home of the gateway's state (SQLite store, keys, "
                                                "development personal-data keys, the simulators' keys); "
                                                "relative: to the working directory")
    database_url: str = Field(default_factory=lambda d: f"sqlite+aiosqlite:///{d['home'] / 'gateway.db'}",
                              description="SQLite (default: home/gateway.db) or postgresql+asyncpg://...")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(None, description="where clients reach this gateway; for status URLs")
    mappings_dir: Path = MAPPINGS
    counterparts_file: Path | None = Field(None, description="counterpart instances; default mappings_dir/counterparts.yaml")
    auto_migrate: bool = True
    worker: bool = Field(True, description="run the delivery worker inside `gateway serve`")
    worker_concurrency: int = Field(64, ge=1, le=4096)
    worker_poll_interval_s: float = Field(0.5, gt=0)
    worker_lease_s: float = Field(60.0, gt=0, description="a claim older than this is taken over (crashed worker)")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    sla_check_interval_s: float = Field(30.0, gt=0, description="how often overdue SLA legs are looked for")
    log_level: str = "INFO"
    keys_dir: Path = Field(default_factory=lambda d: d["home"] / "keys", description="the gateway's signing keys")
    key_passphrase: SecretStr | None = Field(None, description="decrypts the signing keys in keys_dir")
    pii_keys: SecretStr | None = Field(None, description="personal-data encryption keys `kid:base64,...` "
                                       "(first active); unset: made once in pii_keys_file")
    pii_hash_key: SecretStr | None = Field(None, description="base64 key of the IIN search hash (never rotated)")
    pii_keys_file: Path = Field(default_factory=lambda d: d["home"] / "pii-keys.json",
                                description="development fallback for pii_keys/pii_hash_key, created mode 0600")
    document_lease_s: float = Field(60.0, gt=0, description="an upstream document call unfinished after this "
                                                            "is taken over by another process")
    document_sweep_interval_s: float = Field(5.0, gt=0, description="how often flights whose lease ran out are "
                                                                    "looked for")
    idempotency_ttl_s: float = Field(86400.0, ge=86400, description="how long an Idempotency-Key's response is kept")
    audit_checkpoint_interval_s: float = Field(60.0, gt=0, description="how often a signed checkpoint of the "
                                                                       "exchange log is written")
    config_poll_interval_s: float = Field(2.0, gt=0, description="how often a process looks for counterpart "
                                                                 "changes made by an administrator elsewhere")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="SIGTERM: the longest a clean shutdown takes (stop "
                                                              "accepting, finish or hand back claims, flush, "
                                                              "checkpoint) before the process exits anyway")
    tls_cert_file: Path | None = Field(None, description="serve HTTPS with this certificate (PEM; chain after it)")
    tls_key_file: Path | None = Field(None, description="the private key of tls_cert_file (PEM)")
    tls_key_password: SecretStr | None = Field(None, description="the passphrase of an encrypted tls_key_file")
    tls_client_ca_file: Path | None = Field(None, description="mutual TLS: a connection must present a client "
                                                              "certificate issued by these CAs (PEM); identity "
                                                              "still comes only from the signature or token")
    replay_rate_per_s: float = Field(10.0, gt=0, description="a bulk replay of dead letters sends at most this "
                                                            "many per second to each instance")
    alerts_file: Path | None = Field(None, description="alert thresholds and channels; default mappings_dir/alerts.yaml")
    alert_check_interval_s: float = Field(30.0, gt=0, description="how often the alert rules are evaluated")
    smtp_username: str | None = Field(None, description="alert e-mail: the SMTP login (never in alerts.yaml)")
    smtp_password: SecretStr | None = Field(None, description="alert e-mail: the SMTP password")
    client_use_flush_s: float = Field(30.0, gt=0, description="how often the clients' last use is written")
    console: bool = Field(True, description="serve the operator console at /console (false: not mounted)")
    console_language: str = Field("ru", description="the console's language until a person picks one: kk, ru or en")
    console_session_idle_s: float = Field(1800.0, gt=0, description="a console session unused this long ends")
    console_session_max_s: float = Field(8 * 3600.0, gt=0, description="a console session ends this long after "
                                                                       "sign-in, used or not")
    console_sign_in_limit: int = Field(5, ge=1, description="failed console sign-ins allowed per source address "
                                                            "within console_sign_in_window_s")
    console_sign_in_window_s: float = Field(300.0, gt=0)
    console_strict_i18n: bool = Field(False, description="tests: a string missing from a catalogue shows as ⟦text⟧")
    insecure_no_auth: bool = Field(False, description="benchmarks only: an unsigned call counts as the system "
                                                      "client; refused unless the gateway listens on loopback")
    insecure_no_exchange_log: bool = Field(False, description="benchmarks only: hops are not written to the "
                                                              "exchange log (the logging-cost baseline); refused "
                                                              "unless the gateway listens on loopback")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        # Fixed once, so a process that changes directory later still writes where it started.
        return home.absolute()

    @property
    def counterparts_path(self) -> Path:
        return self.counterparts_file or self.mappings_dir / "counterparts.yaml"

    @property
    def alerts_path(self) -> Path:
        return self.alerts_file or self.mappings_dir / "alerts.yaml"

    @model_validator(mode="after")
    def _tls_complete(self) -> "Settings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert_file is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal, as clients write the URI
        return (self.public_url or f"{scheme}://{host}:{self.port}").rstrip("/")
