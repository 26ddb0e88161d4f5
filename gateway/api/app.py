"""The FastAPI application factory."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from gateway import __doc__ as summary
from gateway.api import problems
from gateway.api.routes import deliveries, inbound, keys, messages, ops, sla
from gateway.bootstrap import Container, build
from gateway.config import Settings

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, container: Container | None = None,
               run_worker: bool | None = None) -> FastAPI:
    """Build the app; with no container one is built from settings when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = container or build(settings or Settings())
        app.state.container = c
        app.state.metrics = c.metrics
        await c.start(run_worker=c.settings.worker if run_worker is None else run_worker)
        try:
            yield
        finally:
            await c.stop()

    app = FastAPI(
        title="Probation exchange gateway",
        version=API_VERSION,
        description=summary,
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(messages.router)
    app.include_router(inbound.router)
    app.include_router(deliveries.router)
    app.include_router(sla.router)
    app.include_router(keys.router)
    app.include_router(ops.router)
    max_bytes = (settings or (container.settings if container else None) or Settings()).max_body_bytes
    app.add_middleware(problems.BodyLimit, max_bytes=max_bytes)
    return app
