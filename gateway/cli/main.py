"""`gateway` commands: serve, worker, simulators, demo, doctor, openapi, db."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import typer
from pydantic import ValidationError

from gateway.canonical.errors import ConfigError
from gateway.cli.audit import audit_app
from gateway.cli.keys import keys_app
from gateway.cli.clients import clients_app
from gateway.cli.counterparts import counterparts_app
from gateway.config import MAPPINGS, ROOT, Settings
from gateway.sla.cli import sla_app

app = typer.Typer(help="Probation exchange gateway", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(clients_app, name="clients")
app.add_typer(counterparts_app, name="counterparts")
app.add_typer(sla_app, name="sla")
mappings_app = typer.Typer(help="Mapping files (code tables, routing matrix, counterparts)", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default 8080)"),
    database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://..."),
    worker: bool = typer.Option(None, "--worker/--no-worker", help="run the delivery worker in this process"),
    tls_cert: Path = typer.Option(None, help="serve HTTPS with this certificate (PEM)"),
    tls_key: Path = typer.Option(None, help="the certificate's private key (PEM)"),
    client_ca: Path = typer.Option(None, help="mutual TLS: require client certificates issued by these CAs (PEM)"),
) -> None:
    """Run the gateway API (and, by default, its delivery worker)."""
    from gateway.api.app import create_app
    from gateway.bootstrap import build
    from gateway.cli.servers import run, serve_all, server
    from gateway.observability import configure_logging

    try:
        settings = _settings(host=host, port=port, database_url=database_url, worker=worker, tls_cert_file=tls_cert,
                             tls_key_file=tls_key, tls_client_ca_file=client_ca)
    except ValidationError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level)
    try:
        container = build(settings)
    except ConfigError as exc:
        _fail(str(exc))
    # Through logging, not a bare echo: once logging is configured, stderr carries JSON lines only.
    logging.getLogger("gateway").info(f"gateway listening on {settings.base_url} (store: {container.engines.dialect})")
    run(serve_all([server(create_app(settings, container=container), host=settings.host,
                          port=settings.port, log_level=settings.log_level.lower(), tls_cert=settings.tls_cert_file,
                          tls_key=settings.tls_key_file, client_ca=settings.tls_client_ca_file,
                          tls_key_password=settings.tls_key_password.get_secret_value()
                          if settings.tls_key_password else None, shutdown_bound_s=settings.shutdown_timeout_s)]))


@app.command("worker")
def worker_cmd(
    database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://..."),
    once: bool = typer.Option(False, help="deliver what is due, then exit"),
) -> None:
    """Run the delivery worker alone (no API)."""
    from gateway.bootstrap import build
    from gateway.cli.servers import run
    from gateway.observability import configure_logging

    settings = _settings(database_url=database_url)
    configure_logging(settings.log_level)

    async def main() -> None:
        container = build(settings)
        await container.start(run_worker=not once)
        try:
            if once:
                await container.worker.run_until_idle()
            else:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()
        finally:
            await container.stop()

    run(main())


@app.command()
def simulators(
    gateway_url: str = typer.Option("http://127.0.0.1:8080", help="where simulators send callbacks"),
) -> None:
    """Run a simulator for every counterpart instance configured on this machine."""
    from gateway.cli.servers import run, serve_all, simulator_servers
    from gateway.mapping import load_mappings
    from gateway.observability import configure_logging

    settings = _settings()
    configure_logging(settings.log_level)
    try:
        mappings = load_mappings(settings.mappings_dir, counterparts_file=settings.counterparts_file)
    except ConfigError as exc:
        _fail(str(exc))
    servers = simulator_servers(mappings, gateway_url=gateway_url, counterparts_file=settings.counterparts_path,
                                home=settings.home)
    for label, _ in servers:
        typer.echo(f"simulator {label}", err=True)
    run(serve_all([s for _, s in servers]))


@app.command()
def demo(
    rate: float = typer.Option(2.0, help="sample cases per second"),
    duration: float = typer.Option(0, help="stop after this many seconds (0: until Ctrl-C)"),
    port: int = typer.Option(None, help="gateway port (default 8080)"),
) -> None:
    """Gateway + simulators + a steady stream of sample cases, on the embedded SQLite store."""
    from gateway.cli.demo import DemoFailed, run_demo
    from gateway.cli.servers import run

    # Plain HTTP on loopback: the simulators call back without a client certificate (GATEWAY_TLS_* are for serve).
    settings = _settings(port=port).model_copy(update={"tls_cert_file": None, "tls_key_file": None,
                                                       "tls_client_ca_file": None})
    try:
        run(run_demo(settings, rate=rate, duration=duration))
    except (ConfigError, DemoFailed) as exc:
        _fail(str(exc))


@app.command()
def doctor(
    env_file: Path = typer.Option(None, help="also read GATEWAY_* settings from this file (systemd EnvironmentFile)"),
    demo: bool = typer.Option(False, "--demo", help="check the demo's configuration (its own keys and passphrase)"),
) -> None:
    """Check a configuration without starting the service: one line per check, exit 1 on any failure."""
    from gateway.cli.demo import demo_settings
    from gateway.doctor import diagnose

    if env_file is not None and not env_file.is_file():
        _fail(f"no such file: {env_file}")
    try:
        settings = Settings(_env_file=env_file) if env_file is not None else Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        typer.echo(f"FAIL  settings                     {' '.join(str(exc).split())}")
        raise typer.Exit(1)
    if demo:
        settings = demo_settings(settings)
    checks = asyncio.run(diagnose(settings))
    for check in checks:
        typer.echo(check.line())
    failed = sum(check.status == "FAIL" for check in checks)
    warned = sum(check.status == "warn" for check in checks)
    typer.echo(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    raise typer.Exit(1 if failed else 0)


@app.command()
def openapi(
    write: bool = typer.Option(False, "--write", help=f"write {Path('openapi/openapi.json')} instead of stdout"),
) -> None:
    """Print (or --write) the OpenAPI document generated from the code."""
    from gateway.api.app import create_app

    text = json.dumps(create_app(Settings()).openapi(), indent=2, ensure_ascii=False) + "\n"
    if write:
        (ROOT / "openapi" / "openapi.json").write_text(text, encoding="utf-8")
        typer.echo("wrote openapi/openapi.json", err=True)
    else:
        sys.stdout.write(text)


@mappings_app.command("check")
def mappings_check(
    directory: Path = typer.Argument(MAPPINGS, help="a mappings directory"),
    counterparts_file: Path = typer.Option(None, help="counterpart instances (default DIRECTORY/counterparts.yaml)"),
) -> None:
    """Validate every mapping file; print each error with its file and field."""
    from gateway.mapping import load_mappings
    from gateway.sla.policy import load_sla_config

    problems: list[str] = []
    try:
        m = load_mappings(directory, counterparts_file=counterparts_file)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        sla = load_sla_config(directory)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        _fail("\n".join(problems))
    typer.echo(f"{directory}: ok ({len(m.kinds.kinds)} referral kinds, {len(m.matrix.rules)} matrix rules,"
               f" {len(m.codes)} code tables, {len(m.counterparts.instances)} counterpart instances,"
               f" {len(sla.policy.rules)} SLA rules)")


@db_app.command("upgrade")
def db_upgrade(database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://...")) -> None:
    """Apply every pending migration."""
    from gateway.storage.db import create_engines, current_revision, migrate

    settings = _settings(database_url=database_url)

    async def main() -> str | None:
        engines = create_engines(settings.database_url)
        try:
            await migrate(engines)
            return await current_revision(engines)
        finally:
            await engines.dispose()

    typer.echo(f"schema at revision {asyncio.run(main())}")
