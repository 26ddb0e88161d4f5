"""The FastAPI application factory."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from gateway import __doc__ as summary
from gateway.api import contract, docs, problems
from gateway.api.auth import Authenticate
from gateway.api.idempotency import Idempotency
from gateway.api.routes import admin, audit, deliveries, documents, inbound, keys, messages, ops, sla
from gateway.bootstrap import Container, build
from gateway.config import Settings
from gateway.console import admin_alerts as console_alerts
from gateway.console import admin_pages as console_admin
from gateway.console import pages as console_pages
from gateway.console.web import PREFIX, STATIC, STATIC_PATH, ConsoleHeaders

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, container: Container | None = None,
               run_worker: bool | None = None) -> FastAPI:
    """Build the app; with no container one is built from settings when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        c = container or build(settings or Settings())
        app.state.container = c
        app.state.metrics = c.metrics
        app.state.console = c.console
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
        docs_url=None,  # served by gateway.api.docs from vendored assets: no CDN on a closed network
        redoc_url=None,
    )
    problems.install(app)
    app.openapi = lambda: _openapi_with_security(app)  # type: ignore[method-assign]
    app.include_router(messages.router)
    app.include_router(admin.router)
    app.include_router(documents.router)
    app.include_router(inbound.router)
    app.include_router(deliveries.router)
    app.include_router(audit.router)
    app.include_router(sla.router)
    app.include_router(keys.router)
    app.include_router(ops.router)
    console_on = (settings or (container.settings if container else None) or Settings()).console
    if console_on:
        app.include_router(console_pages.router)
        app.include_router(console_alerts.router)
        app.include_router(console_admin.router)
        app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="console-static")
        app.add_api_route("/", lambda: RedirectResponse(PREFIX + "/", status_code=307), include_in_schema=False)
        app.add_api_route(PREFIX, lambda: RedirectResponse(PREFIX + "/", status_code=307), include_in_schema=False)
    docs.install(app)
    max_bytes = (settings or (container.settings if container else None) or Settings()).max_body_bytes
    app.add_middleware(Idempotency)  # inside Authenticate: keys belong to the verified client
    app.add_middleware(Authenticate)
    app.add_middleware(problems.StoreOutage)  # around authentication: its store reads fail as 503 too
    app.add_middleware(problems.BodyLimit, max_bytes=max_bytes)  # outermost: a huge body is refused unread
    if console_on:
        app.add_middleware(ConsoleHeaders)
    return app


def _openapi_with_security(app: FastAPI) -> dict:
    """The document (gateway.api.contract): FastAPI's, with authentication, problems, headers and examples."""
    if not app.openapi_schema:
        app.openapi_schema = contract.build(app)
    return app.openapi_schema
