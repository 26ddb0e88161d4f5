"""`gateway audit verify` and the chain export: the exchange log's integrity, online or from an export file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer

from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.audit.chain import KeyResolver
    from security.keys import PublicKey

EXIT_TAMPERED = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _settings(database_url: str | None, keys_dir: Path | None) -> Settings:
    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if keys_dir is not None:
        overrides["keys_dir"] = keys_dir
    return Settings(**overrides)


def _resolver(settings: Settings, *, jwks: list[Path], keys_dir_given: bool) -> KeyResolver | None:
    """Trusted checkpoint keys from JWKS files and, with the passphrase, the key store; None when neither."""
    from gateway.audit.chain import ChainError, jwks_resolver, keystore_resolver
    from security.keys import KeyStore

    resolvers: list[KeyResolver] = []
    for path in jwks:
        try:
            resolvers.append(jwks_resolver(orjson.loads(path.read_bytes())))
        except (OSError, orjson.JSONDecodeError, ChainError, AttributeError) as exc:
            _fail(f"--jwks {path}: {exc}")
    passphrase = settings.key_passphrase.get_secret_value() if settings.key_passphrase else None
    if passphrase:
        if settings.keys_dir.is_dir():
            resolvers.append(keystore_resolver(KeyStore(settings.keys_dir, passphrase=passphrase)))
        elif keys_dir_given:
            _fail(f"--keys-dir {settings.keys_dir}: no such directory")
    elif keys_dir_given:
        # The store keeps only encrypted private keys; the public ones are derived from them.
        _fail("--keys-dir needs GATEWAY_KEY_PASSPHRASE to read public keys; or give --jwks (GET /v1/keys)")
    if not resolvers:
        return None

    def resolve(kid: str) -> PublicKey | None:
        for r in resolvers:
            key = r(kid)
            if key is not None:
                return key
        return None

    return resolve


@contextmanager
def _progress(enabled: bool, label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; the callback gets the count done so far."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def _check_sqlite_exists(url: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        if not Path(parsed.database).exists():
            _fail(f"no database at {parsed.database}")


def verify(
    database_url: str = typer.Option(None, "--database-url", help="SQLite (default) or postgresql+asyncpg://..."),
    file: Path = typer.Option(None, "--file", help="verify this export file (gateway audit export --format chain) "
                              "offline instead of the database"),
    jwks: list[Path] = typer.Option(None, "--jwks", help="JWK Set with the checkpoint keys, as GET /v1/keys "
                                    "publishes it (repeatable: keys rotated out need an older copy)"),
    keys_dir: Path = typer.Option(None, "--keys-dir", help="the gateway's key store (default from GATEWAY_KEYS_DIR); "
                                  "needs GATEWAY_KEY_PASSPHRASE"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on stderr (terminals only)"),
) -> None:
    """Recompute the exchange log's hash chain and check its signed checkpoints.

    Exit 0 when intact; 1 naming the first bad record (seq and kind: edited, deleted, inserted,
    reordered, truncated, bad-checkpoint-signature) on stderr; 2 when it cannot be checked."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from gateway.audit.export import ExportFormatError
    from gateway.audit.stream import log_size
    from gateway.audit.verify import VerifyReport, verify_export, verify_store
    from gateway.storage.db import create_engines

    settings = _settings(database_url, keys_dir)
    public_key = _resolver(settings, jwks=list(jwks or []), keys_dir_given=keys_dir is not None)

    if file is not None:
        if database_url:
            _fail("give --file or --database-url, not both")
        if not file.is_file():
            _fail(f"--file {file}: no such file")
        with _progress(progress, "verifying", None) as tick:
            try:
                report: VerifyReport = verify_export(file, public_key=public_key, progress=tick)
            except ExportFormatError as exc:
                _fail(f"exchange log export {file} is damaged: {exc}", EXIT_TAMPERED)
        source = str(file)
    else:
        _check_sqlite_exists(settings.database_url)

        async def main() -> VerifyReport:
            engines = create_engines(settings.database_url, pool_size=2)
            try:
                total = await log_size(engines)
                with _progress(progress, "verifying", total) as tick:
                    return await verify_store(engines, public_key=public_key, progress=tick)
            finally:
                await engines.dispose()

        try:
            report = asyncio.run(main())
        except SQLAlchemyError as exc:
            _fail(f"cannot read the exchange log: {type(exc).__name__}: {exc.args[0] if exc.args else exc}")
        source = "the database"

    if public_key is None:
        typer.echo("checkpoint signatures NOT checked: no keys (give --jwks FILE, or set GATEWAY_KEY_PASSPHRASE "
                   "for the key store); checkpoint heads were compared", err=True)
    if report.problem is not None:
        typer.echo(f"exchange log TAMPERED ({source}): first bad record: {report.problem}", err=True)
        typer.echo(f"{report.records} records intact before it", err=True)
        raise typer.Exit(EXIT_TAMPERED)
    signed = "signature and head" if report.signatures_checked else "head only"
    typer.echo(f"exchange log intact ({source}): {report.records} records, head seq {report.head_seq} "
               f"hash {report.head_hash}; {report.checkpoints} checkpoints verified ({signed})")


def export_log(
    output: Path = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    database_url: str = typer.Option(None, "--database-url", help="SQLite (default) or postgresql+asyncpg://..."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar on stderr (terminals only)"),
) -> None:
    """Write the exchange log and its checkpoints as JSON lines, for `gateway audit verify --file`.

    Every column of every record (raw bodies in base64), each checkpoint after the record it covers."""
    import asyncio

    from gateway.audit.export import export_chain
    from gateway.audit.stream import log_size
    from gateway.storage.db import create_engines

    settings = _settings(database_url, None)
    _check_sqlite_exists(settings.database_url)

    async def main() -> int:
        engines = create_engines(settings.database_url, pool_size=2)
        try:
            total = await log_size(engines)
            with _progress(progress, "exporting", total) as tick:
                if output is None:
                    return await export_chain(engines=engines, out=sys.stdout.buffer, progress=tick)
                with output.open("wb") as out:
                    return await export_chain(engines=engines, out=out, progress=tick)
        finally:
            await engines.dispose()

    count = asyncio.run(main())
    typer.echo(f"exported {count} exchange-log records", err=True)
