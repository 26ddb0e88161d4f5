"""What an administrator watches: each instance's health, the outbox, dead letters, keys, pins and clients."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from gateway.bootstrap import Container
from gateway.pipeline.technical import technical_report
from gateway.storage import operations as reads

CERTIFICATE_WARNING = timedelta(days=60)  # as Domibus warns: two months before a certificate expires


@dataclass
class InstanceHealth:
    name: str
    counterpart: str
    enabled: bool
    breaker: str  # closed | open | half_open (this process's view)
    pending: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_waiting_at: datetime | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure_status: int | None = None
    last_failure_reason: str | None = None
    ack_p50_seconds: float | None = None  # the counterpart's, over the last hour (GET /v1/sla/technical)
    ack_p95_seconds: float | None = None

    def waiting_for(self, now: datetime) -> timedelta | None:
        return None if self.oldest_waiting_at is None else now - self.oldest_waiting_at


@dataclass
class CertificateView:
    owner: str  # an instance name, or "gateway"
    subject: str
    kid: str | None
    not_after: datetime
    state: str  # valid | expiring | expired

    @staticmethod
    def of(owner: str, cert: x509.Certificate, *, kid: str | None, now: datetime) -> "CertificateView":
        not_after = cert.not_valid_after_utc
        state = "expired" if not_after <= now else ("expiring" if not_after - now <= CERTIFICATE_WARNING else "valid")
        return CertificateView(owner, cert.subject.rfc4514_string(), kid, not_after, state)


@dataclass
class KeysView:
    keys: list[dict[str, Any]] = field(default_factory=list)
    certificates: list[CertificateView] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)


async def instance_health(*, c: Container) -> list[InstanceHealth]:
    now = c.clock()
    instances = list(c.mappings.counterparts.instances)
    backlog = await reads.instance_backlog(c.store.engines)
    last = await reads.last_attempts(c.store.engines, [i.name for i in instances])
    technical = {f.counterpart: f for f in (await technical_report(
        store=c.store, mappings=c.mappings, since=now - timedelta(hours=1), until=None)).counterparts}
    out = []
    mono = time.monotonic()
    for inst in instances:
        figures = technical.get(inst.counterpart)
        out.append(InstanceHealth(
            name=inst.name, counterpart=inst.counterpart, enabled=inst.enabled,
            breaker=c.worker.breaker.state(inst.name, now=mono), **backlog.get(inst.name, {}),
            **last.get(inst.name, {}),
            ack_p50_seconds=figures.ack_p50_seconds if figures else None,
            ack_p95_seconds=figures.ack_p95_seconds if figures else None))
    return out


async def keys_view(*, c: Container) -> KeysView:
    now = c.clock()
    view = KeysView()
    if c.keys is not None:
        for info in c.keys.list():
            cert = c.keys.certificate(info.kid)
            view.keys.append({**info.to_json(), "state": "revoked" if info.revoked else (
                "active" if info.active else "retired"), "certificate_not_after": cert.not_valid_after_utc
                if cert is not None else None})
            if cert is not None and not info.revoked:
                view.certificates.append(CertificateView.of("gateway", cert, kid=info.kid, now=now))
    for name, pins in c.counterpart_verifier.pins.items():
        for pin in pins:
            if pin.certificate is not None:
                view.certificates.append(CertificateView.of(name, pin.certificate, kid=pin.kid, now=now))
    view.clients = [row.public() for row in await c.clients.all()]
    return view
