"""Alert test kit: an aiosmtpd server with STARTTLS on a certificate made here, an alerts.yaml, a console sign-in."""

from __future__ import annotations

import ipaddress
import re
import ssl
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.webhook.simulator import create_app as webhook_app, jwks_from
from tests.harness import ThreadServer, free_port

SMTP_USER, SMTP_PASSWORD = "gateway", "test-only smtp password"


def self_signed(directory: Path, name: str, *, days: float, ip: str | None = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate (its own CA) and key valid for `days` from now, written as <name>.crt.pem / <name>.key.pem."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    cert = builder.sign(key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    crt, pem = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


@dataclass
class Inbox:
    """aiosmtpd's handler: every message accepted, with whether it came over TLS and who logged in."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        with self.lock:
            login = session.auth_data.login if session.authenticated and session.auth_data else None
            self.messages.append({"tls": session.ssl is not None, "login": login,
                                  "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                  "message": message_from_bytes(envelope.content)})
        return "250 OK"

    def mails(self) -> list[Message]:
        with self.lock:
            return [m["message"] for m in self.messages]


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (SMTP_USER.encode(),
                                                                             SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class SmtpServer:
    """A local SMTP server that refuses mail before STARTTLS and a login before TLS."""

    def __init__(self, directory: Path) -> None:
        self.cert, key = self_signed(directory, "smtp", days=30)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True, authenticator=_authenticate, auth_require_tls=True)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def webhook_receiver(gateway_url: str) -> ThreadServer:
    """The webhook simulator, verifying each call against the gateway's JWKS."""
    return ThreadServer(webhook_app(jwks=jwks_from(f"{gateway_url}/v1/keys"))).start()


def write_alerts(path: Path, *, channels: list[dict[str, Any]], wait_s: float = 1.0, max_wait_s: float = 60.0,
                 **thresholds: float) -> Path:
    doc = {"version": 1, "thresholds": thresholds, "grouping": {"wait_s": wait_s, "max_wait_s": max_wait_s},
           "channels": channels}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def webhook_channel(receiver_url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "ops-webhook", "type": "webhook", "url": f"{receiver_url}/hooks/gateway",
            "retry": {"max_attempts": 50, "base_delay_s": 0.1, "max_delay_s": 0.5, "deadline_s": 600}, **extra}


def email_channel(port: int, ca_file: str, **extra: Any) -> dict[str, Any]:
    return {"name": "ops-mail", "type": "email", "host": "127.0.0.1", "port": port, "sender": "gateway@example.kz",
            "to": ["duty@example.kz"], "ca_file": ca_file, "timeout_s": 5,
            "retry": {"max_attempts": 50, "base_delay_s": 0.1, "max_delay_s": 0.5, "deadline_s": 600}, **extra}


def console_admin(gateway_url: str, token: str) -> httpx.Client:
    """An httpx client signed in to the console (its session cookie kept)."""
    client = httpx.Client(base_url=gateway_url, timeout=30)
    page = client.get("/console/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = client.post("/console/sign-in", data={"token": token, "csrf": csrf, "next": "/console/"})
    assert r.status_code == 303, r.text
    return client


def notified(receiver: ThreadServer) -> list[dict[str, Any]]:
    return httpx.get(f"{receiver.url}/_sim/received").json()


def webhook_calls(receiver: ThreadServer) -> int:
    return httpx.get(f"{receiver.url}/_sim/stats").json()["requests"]
