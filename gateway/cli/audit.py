"""`gateway audit ...`: exports for auditors."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import Enum
from pathlib import Path

import typer

from gateway.cli.audit_verify import export_log, verify
from gateway.config import Settings

audit_app = typer.Typer(help="The exchange log for auditors: export, verify", no_args_is_help=True)
audit_app.command("verify")(verify)


class ExportFormat(str, Enum):
    events = "events"
    csv = "csv"
    chain = "chain"


@audit_app.command("export")
def export(
    format: ExportFormat = typer.Option(ExportFormat.events, "--format",
                                        help="events: canonical messages with received_at, JSON lines; "
                                             "csv: the exchange log's metadata columns (no raw bytes, no "
                                             "IIN); chain: the exchange log with hashes and checkpoints, for "
                                             "`gateway audit verify --file`"),
    output: Path = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    until: datetime = typer.Option(None, help="only messages received up to this time (RFC 3339)"),
    database_url: str = typer.Option(None, help="SQLite (default) or postgresql+asyncpg://..."),
) -> None:
    """Write the events file `gateway sla report --events` reads, the log's metadata as CSV, or the whole chain."""
    from gateway.audit.export import export_events
    from gateway.cli.servers import run
    from gateway.storage.db import create_engines
    from gateway.bootstrap import open_pii
    from gateway.storage.personal import PersonSeal
    from gateway.storage.store import Store

    if format is not ExportFormat.events and until is not None:
        typer.echo("--until applies to the events format only: the log is exported whole", err=True)
        raise typer.Exit(2)
    if format is ExportFormat.chain:
        export_log(output=output, database_url=database_url, progress=False)
        return
    settings = Settings(**({"database_url": database_url} if database_url else {}))
    if format is ExportFormat.csv:
        records = run(_export_csv(database_url=settings.database_url, output=output))
        typer.echo(f"exported {records} records", err=True)
        return
    if until is not None and until.tzinfo is None:
        typer.echo("--until needs an explicit offset (e.g. 2026-03-02T09:15:00+05:00)", err=True)
        raise typer.Exit(2)

    async def main() -> int:
        engines = create_engines(settings.database_url)
        try:
            store = Store(engines, personal=PersonSeal(open_pii(settings)))
            if output is None:
                return await export_events(store=store, out=sys.stdout.buffer, until=until)
            with output.open("wb") as out:
                return await export_events(store=store, out=out, until=until)
        finally:
            await engines.dispose()

    count = run(main())
    typer.echo(f"exported {count} events", err=True)


async def _export_csv(*, database_url: str, output: Path | None) -> int:
    """The same CSV as `GET /v1/audit/export?format=csv`."""
    from gateway.audit.query import write_csv
    from gateway.storage.db import create_engines

    engines = create_engines(database_url)
    try:
        if output is None:
            return await write_csv(engines=engines, out=sys.stdout.buffer)
        with output.open("wb") as out:
            return await write_csv(engines=engines, out=out)
    finally:
        await engines.dispose()
