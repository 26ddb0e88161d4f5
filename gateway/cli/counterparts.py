"""`gateway counterparts ...`: the same live changes as /v1/admin/counterparts, from a shell on the store."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import typer
import yaml

from gateway.config import Settings

counterparts_app = typer.Typer(help="Counterpart instances: list, change live (validated, audited), import, export",
                               no_args_is_help=True)
T = TypeVar("T")


def _with_admin(work: Callable[[Any, Any], Awaitable[T]]) -> T:
    from gateway.bootstrap import build
    from gateway.cli.servers import run
    from gateway.storage.db import migrate
    from security.access import Principal

    container = build(Settings())
    principal = Principal(f"cli:{getpass.getuser()}", frozenset({"admin"}), "local")

    async def main() -> T:
        try:
            await migrate(container.engines)
            await container.admin.sync()  # start from what the running gateways apply
            return await work(container.admin, principal)
        finally:
            await container.store.committer.stop()
            await container.engines.dispose()

    return run(main())


def _run(work: Callable[[Any, Any], Awaitable[T]]) -> T:
    from gateway.canonical.errors import ConfigError, GatewayError

    try:
        return _with_admin(work)
    except GatewayError as exc:
        typer.echo(f"{exc.title}: {exc.detail}", err=True)
        raise typer.Exit(2)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


def _echo(doc: Any) -> None:
    typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))


@counterparts_app.command("list")
def list_() -> None:
    """Every instance as the gateways apply it now, with the configuration version."""
    async def work(admin, _):  # noqa: ANN001, ANN202
        return admin.current()

    _echo(_run(work))


@counterparts_app.command("show")
def show(name: str) -> None:
    async def work(admin, _):  # noqa: ANN001, ANN202
        return admin.instance(name)

    _echo(_run(work))


@counterparts_app.command("set")
def set_(
    name: str,
    values: list[str] = typer.Argument(..., help="field=value pairs; values are JSON (timeout_s=5, enabled=false)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and show the change and a sample wire message"),
) -> None:
    """Change fields of an instance (a merge patch); running gateways apply it within seconds."""
    patch: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            typer.echo(f"expected field=value, not {item!r}", err=True)
            raise typer.Exit(2)
        try:
            patch[key] = json.loads(raw)
        except json.JSONDecodeError:
            patch[key] = raw  # a bare string, e.g. base_url=http://...

    async def work(admin, principal):  # noqa: ANN001, ANN202
        return await admin.patch(name=name, patch=patch, principal=principal, dry_run=dry_run)

    _echo(_run(work))


@counterparts_app.command("import")
def import_(file: Path = typer.Argument(..., help="a counterparts YAML file")) -> None:
    """Make a whole counterparts file the next version (e.g. after editing the file under version control)."""
    document = yaml.safe_load(file.read_text(encoding="utf-8"))

    async def work(admin, principal):  # noqa: ANN001, ANN202
        return await admin.replace_all(document=document, principal=principal)

    _echo(_run(work))


@counterparts_app.command("export")
def export() -> None:
    """The configuration the gateways apply now, as a counterparts YAML file."""
    async def work(admin, _):  # noqa: ANN001, ANN202
        current = admin.current()
        return {"version": 1, "instances": current["instances"]}

    typer.echo(yaml.safe_dump(_run(work), allow_unicode=True, sort_keys=False))
