"""The one place that knows every concrete class: wires store, adapters, transport and services."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from adapters.con.codec import ConAdapter
from adapters.health.codec import HealthAdapter
from adapters.mio.codec import MioAdapter
from adapters.mtszn.codec import MtsznAdapter
from adapters.probation.codec import ProbationAdapter
from adapters.webhook.codec import WebhookAdapter
from gateway.admin import CounterpartAdmin, CounterpartConfiguration, Reconfigure
from gateway.alerts.email import SmtpMailer
from gateway.alerts.monitor import AlertMonitor
from gateway.alerts.service import AlertService
from gateway.alerts.sources import GatewaySources
from gateway.audit.chain import CheckpointWriter, signer_from_keystore
from gateway.audit.integrity import VerifyJobs
from gateway.audit.log import ExchangeLog
from gateway.access import Authenticator, ClientDirectory, SecurityEvents
from gateway.canonical.errors import ConfigError
from gateway.config import Settings
from gateway.console.i18n import Catalogues
from gateway.console.sessions import ConsoleSessions, FailureThrottle
from gateway.console.web import Console
from gateway.documents import DocumentService
from gateway.loops import Loop
from gateway.mapping import Mappings, load_mappings
from gateway.observability import Metrics
from gateway.ops_metrics import OperationsMetrics
from gateway.pipeline.accept import Accepted, Accepter
from gateway.pipeline.delivery import DeliveryWorker, WorkerSettings
from gateway.pipeline.exchange import OutboundExchange
from gateway.pipeline.ports import Adapter, SignatureChannel
from gateway.wire import Clock, system_clock
from gateway.pipeline.routing import Router
from gateway.pipeline.transport import HttpxTransport, Transport
from gateway.sla.escalation import EscalationScheduler
from gateway.sla.policy import SlaConfig, load_sla_config
from gateway.pipeline.verify import CounterpartVerifier
from gateway.storage.clients import ClientStore
from gateway.storage.counterpart_config import CounterpartConfigStore
from gateway.storage.dead_letters import DeadLetterStore
from gateway.storage.db import Engines, create_engines, migrate
from gateway.storage.documents import DocumentStore
from gateway.storage.idempotency import IdempotencyStore
from gateway.storage.nonces import SqlNonceStore
from gateway.storage.personal import PersonSeal
from gateway.storage.sessions import SessionStore
from gateway.storage.store import Store
from security.keys import KeyStore
from security.offload import BoundedExecutor
from security.parties import load_pins
from security.pii import PiiCipher, generate_key
from security.outbound import signer_from_store

log = logging.getLogger("gateway")


def build_adapters() -> dict[str, Adapter]:
    return {a.counterpart: a for a in (ConAdapter(), HealthAdapter(), MioAdapter(), MtsznAdapter(), ProbationAdapter(),
                                       WebhookAdapter())}


def signature_channels(adapters: Mapping[str, Adapter]) -> dict[str, SignatureChannel]:
    """Counterpart -> how its messages are signed, as each adapter declares: the signer, verifier and
    authenticator ask this instead of knowing counterparts by name."""
    return {name: adapter.signature_channel for name, adapter in adapters.items()}


@dataclass
class Container:
    settings: Settings
    mappings: Mappings
    engines: Engines
    store: Store
    accepter: Accepter
    worker: DeliveryWorker
    metrics: Metrics
    adapters: dict[str, Adapter]
    transport: Transport
    clock: Clock
    sla: SlaConfig
    escalations: EscalationScheduler
    keys: KeyStore | None
    clients: ClientStore
    authenticator: Authenticator
    security_events: SecurityEvents
    documents: DocumentService
    idempotency: IdempotencyStore
    exchange_log: ExchangeLog
    checkpoints: CheckpointWriter | None
    counterpart_verifier: CounterpartVerifier
    admin: CounterpartAdmin | None = None
    console: Console | None = None
    alert_monitor: AlertMonitor | None = None
    alerts: AlertService | None = None
    operations_metrics: OperationsMetrics | None = None

    async def start(self, *, run_worker: bool) -> None:
        if self.settings.auto_migrate:
            await migrate(self.engines)
        if self.admin is not None:
            await self.admin.sync()  # an administrator's newest counterpart configuration wins over the file
            self.admin.start()
        self.store.committer.start()
        self.authenticator.directory.loop.start()
        if self.checkpoints is not None:
            self.checkpoints.start()
        if self.operations_metrics is not None:
            self.operations_metrics.start()
        if run_worker:
            self.worker.start()
            self.escalations.start()
            if self.alert_monitor is not None:  # beside the worker: circuit breakers are the worker's
                self.alert_monitor.start()
            self.documents.start()

    @property
    def loops(self) -> list[Loop]:
        """The background loops this process started; their state is in /readyz and the metrics."""
        found = [self.store.committer.loop, self.worker.loop, self.escalations.loop, self.documents.loop]
        found += [x.loop for x in (self.checkpoints, self.admin, self.operations_metrics) if x is not None]
        found.append(self.authenticator.directory.loop)
        if self.alert_monitor is not None:
            found += [self.alert_monitor.loop, self.alert_monitor.mail_loop]
        return [loop for loop in found if loop.running or loop.state != "stopped"]

    async def stop(self) -> None:
        """Within settings.shutdown_timeout_s, store or no store: attempts under way finish or are handed back,
        queued writes are committed, a last checkpoint is written. Never raises: what was accepted is committed."""
        # Four fifths: under `gateway serve`, uvicorn spends up to a fifth on open connections before this runs.
        deadline = time.monotonic() + self.settings.shutdown_timeout_s * 0.8
        if self.console is not None:
            await self.console.jobs.stop()
        if self.admin is not None:
            await _bounded("config polling", self.admin.stop(), deadline)
        await _bounded("client use", self.authenticator.directory.loop.stop(), deadline)
        await _bounded("client use", self.authenticator.directory.flush(), deadline)
        await _bounded("document sweeper", self.documents.stop(), deadline)
        if self.operations_metrics is not None:
            await _bounded("operations metrics", self.operations_metrics.stop(), deadline)
        await _bounded("SLA escalations", self.escalations.stop(), deadline)
        if self.alert_monitor is not None:
            await _bounded("alert monitor", self.alert_monitor.stop(), deadline)
        if self.worker.running:
            await _bounded("delivery worker", self.worker.stop(grace_s=_share(deadline, 0.5)), deadline)
        if self.checkpoints is not None:  # a last checkpoint covering everything this process wrote
            await _bounded("final checkpoint", self.checkpoints.stop(timeout_s=_share(deadline, 0.5)), deadline)
        await _bounded("committer", self.store.committer.stop(timeout_s=_share(deadline, 0.7)), deadline)
        await _bounded("transport", self.transport.aclose(), deadline)
        await _bounded("store connections", self.engines.dispose(), deadline)


def _share(deadline: float, fraction: float) -> float:
    """A part of the time left before `deadline`."""
    return max(0.1, (deadline - time.monotonic()) * fraction)


async def _bounded(what: str, step: Any, deadline: float) -> None:
    """One shutdown step, cut off at the deadline; a failure is logged and shutdown goes on."""
    try:
        await asyncio.wait_for(step, timeout=max(0.1, deadline - time.monotonic()))
    except Exception as exc:  # noqa: BLE001
        log.warning("shutdown: %s did not finish cleanly (%s: %s)", what, type(exc).__name__, exc)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _bench_only(settings: Settings, switch: str, what: str) -> None:
    """A benchmark baseline switch: refused unless the gateway listens on loopback, and loud when on."""
    env = f"GATEWAY_{switch.upper()}"
    if settings.host not in LOOPBACK:
        raise ConfigError(f"{env} is for benchmarks on loopback only")
    log.warning(f"INSECURE: {what} ({env})")


def build(settings: Settings, *, clock: Clock = system_clock, transport: Transport | None = None) -> Container:
    mappings = load_mappings(settings.mappings_dir, counterparts_file=settings.counterparts_file,
                             alerts_file=settings.alerts_file)
    pins = load_pins(mappings, counterparts_file=settings.counterparts_path, home=settings.home)
    engines = create_engines(settings.database_url)
    cipher = open_pii(settings)
    exchange_log = ExchangeLog(cipher=cipher)
    if settings.insecure_no_exchange_log:
        _bench_only(settings, "insecure_no_exchange_log", "hops are not written to the exchange log")
    store = Store(engines, exchange_log=None if settings.insecure_no_exchange_log else exchange_log,
                  personal=PersonSeal(cipher))
    keys = open_keys(settings)
    checkpoints = None
    if keys is not None and keys.active_info(channel="json") is not None:
        checkpoints = CheckpointWriter(store.committer, sign=signer_from_keystore(keys),
                                       interval_s=settings.audit_checkpoint_interval_s)
        exchange_log.on_appended = checkpoints.notify
    else:
        log.warning("the exchange log gets no signed checkpoints without an active json key")
    nonces = SqlNonceStore(store=store, clock=clock)
    crypto = BoundedExecutor(2, max_pending=64, thread_name_prefix="verify")
    adapters = build_adapters()
    channels = signature_channels(adapters)
    verifier = CounterpartVerifier(mappings=mappings, pins=pins, nonces=nonces, clock=clock, channels=channels,
                                   executor=crypto)
    metrics = Metrics()
    transport = transport or HttpxTransport()
    signer = signer_from_store(keys, channels=channels) if keys is not None else None
    if signer is None or signer.http is None or signer.xml is None:
        log.warning("outbound messages go unsigned on a channel without an active key: run `gateway keys generate`")
    accepter = Accepter(
        store=store,
        router=Router(mappings),
        clock=clock,
        status_url=lambda mid: f"{settings.base_url}/v1/messages/{mid}",
    )
    exchange = OutboundExchange(transport=transport, clock=clock, signer=signer, verifier=verifier)
    worker = DeliveryWorker(
        store=store,
        accepter=accepter,
        adapters=adapters,
        mappings=mappings,
        exchange=exchange,
        clock=clock,
        metrics=metrics,
        settings=WorkerSettings(
            concurrency=settings.worker_concurrency,
            poll_interval_s=settings.worker_poll_interval_s,
            lease_s=settings.worker_lease_s,
        ),
    )

    def on_accepted(result: Accepted) -> None:
        if result.duplicate:
            metrics.duplicates.labels(result.source).inc()
            return
        metrics.accepted.labels(result.type, result.source).inc()

    accepter.listeners.append(on_accepted)
    sla = load_sla_config(settings.mappings_dir)
    escalations = EscalationScheduler(store=store, accepter=accepter, config=sla, clock=clock,
                                      interval_s=settings.sla_check_interval_s)
    clients = ClientStore(store)
    if settings.insecure_no_auth:
        _bench_only(settings, "insecure_no_auth", "unsigned calls are accepted as the system client")
    directory = ClientDirectory(clients, flush_interval_s=settings.client_use_flush_s)
    authenticator = Authenticator(directory=directory, counterparts=verifier, mappings=mappings,
                                  nonces=nonces, clock=clock, base_url=settings.base_url, channels=channels,
                                  insecure_no_auth=settings.insecure_no_auth, executor=crypto)
    events = SecurityEvents(store=store, clock=clock)
    documents = DocumentService(store=store, documents=DocumentStore(engines), mappings=mappings, adapters=adapters,
                                exchange=exchange, accepter=accepter, cipher=cipher, clock=clock,
                                metrics=metrics, events=events, lease_s=settings.document_lease_s,
                                sweep_interval_s=settings.document_sweep_interval_s,
                                status_url=lambda rid: f"{settings.base_url}/v1/document-requests/{rid}")
    container = Container(settings, mappings, engines, store, accepter, worker, metrics, adapters, transport, clock,
                     sla, escalations, keys, clients, authenticator, events, documents,
                     IdempotencyStore(store, ttl=timedelta(seconds=settings.idempotency_ttl_s)), exchange_log,
                     checkpoints, verifier)
    container.admin = build_admin(container)
    metrics.watch_loops(lambda: container.loops)
    if settings.console:
        container.console = build_console(settings, store=store, directory=authenticator.directory, events=events,
                                          keys=keys, clock=clock)
    container.alert_monitor = build_alert_monitor(container)
    container.alerts = AlertService(store=store, clock=clock, monitor=container.alert_monitor)
    container.operations_metrics = OperationsMetrics(
        engines=engines, mappings=lambda: container.mappings, breakers=worker.breaker,
        pins=lambda: verifier.pins, keys=keys, escalations=escalations, checkpoints=checkpoints,
        verification=lambda: container.console.jobs if container.console is not None else None)
    metrics.registry.register(container.operations_metrics)
    return container


def build_admin(c: Container) -> CounterpartAdmin:
    """The counterpart admin, and a listener per component that follows its changes (in the order they apply)."""

    def container(new: CounterpartConfiguration) -> None:
        c.mappings = new.mappings  # what routes, the alert sources and the metrics read live

    def accepter(new: CounterpartConfiguration) -> None:
        c.accepter.router = Router(new.mappings)

    def worker(new: CounterpartConfiguration) -> None:
        c.worker.reconfigure(new.mappings)  # retry policies; later attempts read URL, timeout, limits from it

    def verifier(new: CounterpartConfiguration) -> None:
        c.counterpart_verifier.reconfigure(mappings=new.mappings, pins=new.pins)

    def authenticator(new: CounterpartConfiguration) -> None:
        c.authenticator.mappings = new.mappings

    def documents(new: CounterpartConfiguration) -> None:
        c.documents.reconfigure(new.mappings)

    listeners: list[Reconfigure] = [container, accepter, worker, verifier, authenticator, documents]
    settings = c.settings
    return CounterpartAdmin(
        config=CounterpartConfigStore(c.store), dead_letters=DeadLetterStore(c.store), record_hop=c.store.record_hop,
        mappings=c.mappings, adapters=c.adapters, counterparts_path=settings.counterparts_path, home=settings.home,
        clock=c.clock, wake_worker=c.worker.wake, replay_rate_per_s=settings.replay_rate_per_s, listeners=listeners,
        poll_interval_s=settings.config_poll_interval_s)


def build_alert_monitor(c: Container) -> AlertMonitor:
    """The alert rules' sources are the running components, read live (an admin's counterpart change included)."""
    settings = c.settings
    sources = GatewaySources(
        store=c.store, sla=c.sla, mappings=lambda: c.mappings, breakers=c.worker.breaker,
        pins=lambda: c.counterpart_verifier.pins, keys=c.keys,
        checkpoints=c.checkpoints.loop if c.checkpoints is not None else None,
        verification=lambda: c.console.jobs if c.console is not None else None)
    mailer = SmtpMailer(username=settings.smtp_username,
                        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                        ca_dir=settings.alerts_path.parent)
    return AlertMonitor(store=c.store, accepter=c.accepter, sources=sources, mappings=lambda: c.mappings,
                        mailer=mailer, clock=c.clock, metrics=c.metrics, interval_s=settings.alert_check_interval_s,
                        console_url=f"{settings.base_url}/console/admin/alerts" if settings.console else None)


def build_console(settings: Settings, *, store: Store, directory: ClientDirectory, events: SecurityEvents,
                  keys: KeyStore | None, clock: Clock) -> Console:
    """The operator console: catalogues loaded whole at start-up (a broken .po file stops it, named)."""
    sessions = ConsoleSessions(
        sessions=SessionStore(store), directory=directory, events=events, clock=clock,
        idle=timedelta(seconds=settings.console_session_idle_s),
        lifetime=timedelta(seconds=settings.console_session_max_s),
        throttle=FailureThrottle(limit=settings.console_sign_in_limit, window_s=settings.console_sign_in_window_s))
    return Console(catalogues=Catalogues(default=settings.console_language, strict=settings.console_strict_i18n),
                   sessions=sessions, jobs=VerifyJobs(engines=store.engines, keys=keys, clock=clock), events=events,
                   secure_cookies=settings.base_url.startswith("https://"),
                   session_max_s=settings.console_session_max_s)


def open_keys(settings: Settings) -> KeyStore | None:
    """The gateway's key store, when a passphrase is configured."""
    if settings.key_passphrase is None:
        return None
    return KeyStore(settings.keys_dir, passphrase=settings.key_passphrase.get_secret_value())


def open_pii(settings: Settings) -> PiiCipher:
    """The personal-data cipher: from settings, or (development) from a key file made on first start."""
    if settings.pii_keys is not None and settings.pii_hash_key is not None:
        return PiiCipher.from_config(settings.pii_keys.get_secret_value(),
                                     hash_key=settings.pii_hash_key.get_secret_value())
    path = settings.pii_keys_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"keys": f"k1:{generate_key()}", "hash_key": generate_key()}
        try:  # O_EXCL: two processes starting at once must end up with one key file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)
            log.warning("personal-data keys created in %s: set GATEWAY_PII_KEYS and GATEWAY_PII_HASH_KEY "
                        "in production", path)
    for _ in range(50):  # another process may be between creating and writing the file
        try:
            doc = json.loads(path.read_text())
            break
        except (json.JSONDecodeError, FileNotFoundError):
            time.sleep(0.02)
    return PiiCipher.from_config(doc["keys"], hash_key=doc["hash_key"])
