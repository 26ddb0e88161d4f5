"""The one place that knows every concrete class: wires store, adapters, transport and services."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters.con.codec import ConAdapter
from adapters.health.codec import HealthAdapter
from adapters.mio.codec import MioAdapter
from adapters.mtszn.codec import MtsznAdapter
from adapters.probation.codec import ProbationAdapter
from gateway.access import Authenticator, ClientDirectory, SecurityEvents
from gateway.config import Settings
from gateway.mapping import Mappings, load_mappings, load_pins
from gateway.observability import Metrics
from gateway.pipeline.accept import Accepted, Accepter
from gateway.pipeline.delivery import DeliveryWorker, WorkerSettings
from gateway.pipeline.ports import Adapter, Clock, system_clock
from gateway.pipeline.routing import Router
from gateway.pipeline.transport import HttpxTransport, Transport
from gateway.sla.escalation import EscalationScheduler
from gateway.sla.policy import SlaConfig, load_sla_config
from gateway.pipeline.verify import CounterpartVerifier
from gateway.storage.clients import ClientStore
from gateway.storage.db import Engines, create_engines, migrate
from gateway.storage.nonces import SqlNonceStore
from gateway.storage.store import Store
from security.keys import KeyStore
from security.outbound import signer_from_store

log = logging.getLogger("gateway")


def build_adapters() -> dict[str, Adapter]:
    return {a.counterpart: a for a in (ConAdapter(), HealthAdapter(), MioAdapter(), MtsznAdapter(), ProbationAdapter())}


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

    async def start(self, *, run_worker: bool) -> None:
        if self.settings.auto_migrate:
            await migrate(self.engines)
        self.store.committer.start()
        if run_worker:
            self.worker.start()
            self.accepter.dispatcher = self.worker
            self.escalations.start()

    async def stop(self) -> None:
        await self.escalations.stop()
        self.accepter.dispatcher = None
        if self.worker._main is not None:
            await self.worker.stop()
        await self.store.committer.stop()
        await self.transport.aclose()
        await self.engines.dispose()


def build(settings: Settings, *, clock: Clock = system_clock, transport: Transport | None = None) -> Container:
    mappings = load_mappings(settings.mappings_dir, counterparts_file=settings.counterparts_file)
    pins = load_pins(mappings, counterparts_file=settings.counterparts_path)
    engines = create_engines(settings.database_url)
    store = Store(engines)
    nonces = SqlNonceStore(store=store, clock=clock)
    verifier = CounterpartVerifier(mappings=mappings, pins=pins, nonces=nonces, clock=clock)
    metrics = Metrics()
    adapters = build_adapters()
    transport = transport or HttpxTransport()
    keys = open_keys(settings)
    signer = signer_from_store(keys) if keys is not None else None
    if signer is None or signer.http is None or signer.xml is None:
        log.warning("outbound messages go unsigned on a channel without an active key: run `gateway keys generate`")
    accepter = Accepter(
        store=store,
        router=Router(mappings),
        clock=clock,
        status_url=lambda mid: f"{settings.base_url}/v1/messages/{mid}",
    )
    worker = DeliveryWorker(
        store=store,
        accepter=accepter,
        adapters=adapters,
        mappings=mappings,
        transport=transport,
        clock=clock,
        metrics=metrics,
        settings=WorkerSettings(
            concurrency=settings.worker_concurrency,
            poll_interval_s=settings.worker_poll_interval_s,
            lease_s=settings.worker_lease_s,
        ),
        signer=signer,
        verifier=verifier,
    )

    def on_accepted(result: Accepted) -> None:
        if result.duplicate:
            metrics.duplicates.labels(result.source).inc()
            return
        metrics.accepted.labels(result.type, result.source).inc()
        if result.dispatched:
            worker.dispatch(result.dispatched)
        if result.queued > len(result.dispatched):
            worker.wake()

    accepter.listeners.append(on_accepted)
    sla = load_sla_config(settings.mappings_dir)
    escalations = EscalationScheduler(store=store, accepter=accepter, config=sla, clock=clock,
                                      interval_s=settings.sla_check_interval_s)
    clients = ClientStore(store)
    authenticator = Authenticator(directory=ClientDirectory(clients), counterparts=verifier, mappings=mappings,
                                  nonces=nonces, clock=clock, base_url=settings.base_url)
    return Container(settings, mappings, engines, store, accepter, worker, metrics, adapters, transport, clock,
                     sla, escalations, keys, clients, authenticator, SecurityEvents(store=store, clock=clock))


def open_keys(settings: Settings) -> KeyStore | None:
    """The gateway's key store, when a passphrase is configured."""
    if settings.key_passphrase is None:
        return None
    return KeyStore(settings.keys_dir, passphrase=settings.key_passphrase.get_secret_value())
