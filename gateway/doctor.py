"""`gateway doctor`: checks a configuration without starting the service, one line per check with what to fix."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from cryptography import x509

from gateway.bootstrap import build_adapters, signature_channels
from gateway.canonical.errors import ConfigError
from gateway.config import Settings
from gateway.mapping import Mappings, key_file, load_mappings
from security.parties import PinError, PinnedKey, load_pin, parse_pin

Status = Literal["ok", "warn", "FAIL"]
EXPIRY_WARN_DAYS = 60  # as the certificate_expiry alert's default
CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<28} {self.detail}"


def _days_left(cert: x509.Certificate, now: datetime) -> int:
    return (cert.not_valid_after_utc - now).days


def _expiry(what: str, name: str, cert: x509.Certificate, now: datetime, fix: str) -> Check:
    days = _days_left(cert, now)
    if cert.not_valid_after_utc <= now:
        return Check("FAIL", name, f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}; fix: {fix}")
    if days < EXPIRY_WARN_DAYS:
        return Check("warn", name, f"{what} expires in {days} days ({cert.not_valid_after_utc:%Y-%m-%d}); {fix}")
    return Check("ok", name, f"{what} valid, {days} days to expiry")


def check_keys(settings: Settings, *, xml_needed: bool, now: datetime) -> list[Check]:
    from gateway.bootstrap import open_keys
    from security.keys import KeyStoreError

    if settings.key_passphrase is None:
        return [Check("FAIL", "signing keys", "GATEWAY_KEY_PASSPHRASE is not set; fix: set it to the passphrase "
                                              f"of the keys in {settings.keys_dir} (nothing is signed without it)")]
    keys = open_keys(settings)
    assert keys is not None
    out = []
    for channel in ("json", "xml") if xml_needed else ("json",):
        name = f"signing key ({channel})"
        info = keys.active_info(channel=channel)  # type: ignore[arg-type]
        if info is None:
            out.append(Check("FAIL", name, f"no active key in {settings.keys_dir}; fix: "
                                           f"`gateway keys generate --channel {channel}`"))
            continue
        try:
            keys.active(channel=channel)  # type: ignore[arg-type]  # decrypts: proves the passphrase
        except (KeyStoreError, ValueError) as exc:
            out.append(Check("FAIL", name, f"{info.kid} cannot be opened ({exc}); fix: GATEWAY_KEY_PASSPHRASE "
                                           "must be the passphrase the keys were made with"))
            continue
        cert = keys.certificate(info.kid)
        if cert is None:
            out.append(Check("ok", name, f"{info.kid} opens"))
        else:
            out.append(_expiry(f"{info.kid} opens; its certificate", name, cert, now,
                               f"`gateway keys rotate --channel {channel}`"))
    return out


def check_pii(settings: Settings) -> Check:
    from security.pii import PiiCipher

    if settings.pii_keys is not None and settings.pii_hash_key is not None:
        try:
            cipher = PiiCipher.from_config(settings.pii_keys.get_secret_value(),
                                           hash_key=settings.pii_hash_key.get_secret_value())
        except (ValueError, KeyError) as exc:
            return Check("FAIL", "personal-data keys", f"GATEWAY_PII_KEYS / GATEWAY_PII_HASH_KEY unusable ({exc}); "
                                                       "fix: `kid:base64,...` and a base64 hash key")
        return Check("ok", "personal-data keys", f"{len(cipher.kids)} key(s), {cipher.active_kid} encrypts")
    if (settings.pii_keys is None) != (settings.pii_hash_key is None):
        return Check("FAIL", "personal-data keys", "set both GATEWAY_PII_KEYS and GATEWAY_PII_HASH_KEY, or neither")
    if settings.pii_keys_file.is_file():
        return Check("warn", "personal-data keys", f"development key file {settings.pii_keys_file}; in production "
                                                   "set GATEWAY_PII_KEYS and GATEWAY_PII_HASH_KEY")
    return Check("warn", "personal-data keys", f"unset: the first start makes {settings.pii_keys_file} "
                                               "(development only); in production set GATEWAY_PII_KEYS and "
                                               "GATEWAY_PII_HASH_KEY")


async def check_database(settings: Settings) -> Check:
    from gateway.storage.db import create_engines, current_revision, describe_url, head_revision

    url = describe_url(settings.database_url)
    shown = url.shown
    if url.sqlite_file and not Path(url.sqlite_file).is_file():
        return Check("FAIL", "database", f"no SQLite file at {url.sqlite_file}; fix: `gateway db upgrade` "
                                         "(or point GATEWAY_DATABASE_URL at the store)")
    engines = create_engines(settings.database_url, pool_size=1)
    try:
        current = await asyncio.wait_for(current_revision(engines), timeout=10)
    except Exception as exc:  # whatever the driver raises, the line says it and what to do
        return Check("FAIL", "database", f"{shown} unreachable ({type(exc).__name__}: {exc}); fix: "
                                         "GATEWAY_DATABASE_URL, the server, its credentials")
    finally:
        await engines.dispose()
    head = head_revision()
    if current != head:
        return Check("FAIL", "database", f"{shown} at revision {current or 'none'}, the code needs {head}; "
                                         "fix: `gateway db upgrade`")
    return Check("ok", "database", f"{shown} reachable, schema at {head}")


def check_mappings(settings: Settings) -> tuple[Check, Mappings | None]:
    from gateway.sla.policy import load_sla_config

    try:
        mappings = load_mappings(settings.mappings_dir, counterparts_file=settings.counterparts_file,
                                 alerts_file=settings.alerts_file)
        load_sla_config(settings.mappings_dir)
    except ConfigError as exc:
        return Check("FAIL", "mappings", f"{' '.join(str(exc).split())}; fix: the files named "
                                         f"(`gateway mappings check {settings.mappings_dir}`)"), None
    return Check("ok", "mappings", f"{settings.mappings_dir} and {settings.counterparts_path} valid, "
                                   f"{len(mappings.counterparts.instances)} counterpart instances"), mappings


async def _reachable(host: str, port: int) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    writer.close()
    await writer.wait_closed()
    return None


async def check_counterparts(settings: Settings, mappings: Mappings, *, now: datetime) -> list[Check]:
    instances = mappings.counterparts.instances
    reach = await asyncio.gather(*(_reachable(i.base_url.host or "", i.base_url.port or 443) for i in instances))
    out = []
    for inst, problem in zip(instances, reach):
        name = f"counterpart {inst.name}"
        if problem is not None:
            out.append(Check("FAIL", name, f"{inst.base_url} unreachable ({problem}); fix: its base_url in "
                                           f"{settings.counterparts_path}, the network or its firewall"))
        else:
            out.append(Check("ok", name, f"{inst.base_url} accepts connections"))
        for j, key in enumerate(inst.keys):
            pin_name = f"  pinned key {inst.name}.{j}"
            try:
                pin: PinnedKey = parse_pin(key.encode()) if key.lstrip().startswith(("-----BEGIN", "{")) \
                    else load_pin(key_file(key, counterparts_file=settings.counterparts_path, home=settings.home))
            except PinError as exc:
                out.append(Check("FAIL", pin_name, f"{exc}; fix: instances[{inst.name}].keys in "
                                                   f"{settings.counterparts_path}"))
                continue
            if pin.certificate is None:
                out.append(Check("ok", pin_name, f"public key {pin.kid} (no certificate, no expiry)"))
            else:
                out.append(_expiry(f"certificate {pin.kid}", pin_name, pin.certificate, now,
                                   f"pin the counterpart's new certificate (`gateway counterparts set {inst.name} "
                                   "keys=...`)"))
    return out


def check_tls(settings: Settings, *, now: datetime) -> list[Check]:
    if settings.tls_cert_file is None:
        loopback = settings.host in ("localhost",) or _is_loopback(settings.host)
        return [Check("ok" if loopback else "warn", "tls", "not configured: plain HTTP" + (
            " on loopback" if loopback else f" on {settings.host}; fix: GATEWAY_TLS_CERT_FILE and "
                                            "GATEWAY_TLS_KEY_FILE, or a TLS proxy in front"))]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    password = settings.tls_key_password.get_secret_value() if settings.tls_key_password else None
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file, password=password)
        cert = x509.load_pem_x509_certificate(Path(settings.tls_cert_file).read_bytes())
    except (OSError, ssl.SSLError, ValueError) as exc:
        return [Check("FAIL", "tls", f"{settings.tls_cert_file} / {settings.tls_key_file} unusable ({exc}); fix: "
                                     "a PEM certificate (chain after it) and its key, GATEWAY_TLS_KEY_PASSWORD")]
    out = [_expiry(f"{settings.tls_cert_file}", "tls", cert, now, "renew it and restart")]
    if settings.tls_client_ca_file is not None:
        try:
            context.load_verify_locations(settings.tls_client_ca_file)
            out.append(Check("ok", "tls client CA", f"{settings.tls_client_ca_file} loads"))
        except (OSError, ssl.SSLError) as exc:
            out.append(Check("FAIL", "tls client CA", f"{settings.tls_client_ca_file} unusable ({exc})"))
    return out


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_console(settings: Settings) -> Check:
    if not settings.console:
        return Check("ok", "console", "off (GATEWAY_CONSOLE=false)")
    if settings.console_language not in ("kk", "ru", "en"):
        return Check("FAIL", "console", f"GATEWAY_CONSOLE_LANGUAGE={settings.console_language!r}; fix: kk, ru or en")
    if settings.console_session_idle_s > settings.console_session_max_s:
        return Check("FAIL", "console", "GATEWAY_CONSOLE_SESSION_IDLE_S is longer than GATEWAY_CONSOLE_SESSION_MAX_S")
    if not settings.base_url.startswith("https://") and not _is_loopback(settings.host) \
            and settings.host != "localhost":
        return Check("warn", "console", f"served at {settings.base_url}: the session cookie is not Secure; fix: "
                                        "GATEWAY_PUBLIC_URL=https://... behind TLS")
    return Check("ok", "console", f"{settings.base_url}/console/ ({settings.console_language}, sessions "
                                  f"{settings.console_session_idle_s:.0f} s idle / {settings.console_session_max_s:.0f} s)")


async def diagnose(settings: Settings, *, now: datetime | None = None) -> list[Check]:
    """Every check, in the order an operator fixes things."""
    now = now or datetime.now(timezone.utc)
    mapping_check, mappings = check_mappings(settings)
    channels = signature_channels(build_adapters())
    xml_needed = mappings is None or any(channels.get(i.counterpart) == "xml" for i in mappings.counterparts.instances)
    checks = [*check_keys(settings, xml_needed=xml_needed, now=now), check_pii(settings),
              await check_database(settings), mapping_check]
    if mappings is not None:
        checks += await check_counterparts(settings, mappings, now=now)
    return [*checks, *check_tls(settings, now=now), check_console(settings)]
