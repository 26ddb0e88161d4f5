"""`gateway clients ...`: who may call the gateway (system clients by key, admins and auditors by token)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import typer

from gateway.config import Settings

clients_app = typer.Typer(help="Clients: the Probation IS (system) by its key, admins and auditors by token",
                          no_args_is_help=True)
T = TypeVar("T")


class RoleOpt(str, Enum):
    system = "system"
    admin = "admin"
    auditor = "auditor"


def with_clients(database_url: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(ClientStore)` on the configured store, migrated first (a new install starts with clients)."""
    from gateway.cli.servers import run
    from gateway.storage.clients import ClientStore
    from gateway.storage.db import create_engines, migrate
    from gateway.storage.store import Store

    settings = Settings(**({"database_url": database_url} if database_url else {}))

    async def main() -> T:
        engines = create_engines(settings.database_url)
        try:
            await migrate(engines)
            return await work(ClientStore(Store(engines)))
        finally:
            await engines.dispose()

    return run(main())


@clients_app.command("add")
def add(
    client_id: str = typer.Argument(..., help="a name, e.g. probation-is or an auditor's login"),
    role: list[RoleOpt] = typer.Option(..., "--role", help="system (signs with a key), admin, auditor"),
    public_key: Path = typer.Option(None, "--public-key", help="system clients: PEM certificate, PEM key or JWK"),
    description: str = typer.Option(None, help="who this is"),
    database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://..."),
) -> None:
    """Add a client; an admin or auditor gets a bearer token, printed once and stored only as a hash."""
    from gateway.clients import ClientSpecError, add_client
    from gateway.canonical.errors import GatewayError
    from security.httpsig import algorithms_for
    from security.parties import PinError, parse_pin

    key = public_key.read_bytes() if public_key is not None else None
    algorithms: tuple[str, ...] = ()
    try:
        if key is not None:  # a key the verifier could never use is refused here, not at the first request
            try:
                algorithms = algorithms_for(parse_pin(key).public_key)
            except ValueError as exc:
                raise PinError(str(exc)) from exc
        added = with_clients(database_url, lambda store: add_client(
            clients=store, client_id=client_id, roles=[r.value for r in role], public_key=key,
            description=description, now=datetime.now(timezone.utc)))
    except (ClientSpecError, PinError, GatewayError) as exc:
        typer.echo(f"cannot add {client_id}: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(added.row.public(), ensure_ascii=False))
    if added.row.keyid:
        typer.echo(f"keyid (RFC 7638 thumbprint; sign with keyid=\"…\" as this): {added.row.keyid}", err=True)
        typer.echo(f"algorithms this key may sign with (RFC 9421 alg): {', '.join(algorithms)}", err=True)
    if added.token:
        typer.echo(f"token (shown once): {added.token}", err=True)


@clients_app.command("list")
def list_(database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://...")) -> None:
    """Every client with its roles and how it authenticates (never a token)."""
    async def work(store):  # noqa: ANN001, ANN202
        return await store.all()

    for row in with_clients(database_url, work):
        typer.echo(json.dumps(row.public(), ensure_ascii=False))


@clients_app.command("revoke")
def revoke(
    client_id: str = typer.Argument(...),
    database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://..."),
) -> None:
    """Revoke a client: its signatures and token are refused from then on (within 2 s on every process)."""
    from gateway.canonical.errors import NotFound

    try:
        row = with_clients(database_url, lambda store: store.revoke(client_id=client_id,
                                                                    now=datetime.now(timezone.utc)))
    except NotFound as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(row.public(), ensure_ascii=False))
