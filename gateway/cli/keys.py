"""`gateway keys ...`: the gateway's signing keys, encrypted at rest with GATEWAY_KEY_PASSPHRASE."""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

import typer

from gateway.config import Settings

keys_app = typer.Typer(help="Signing keys (GATEWAY_KEY_PASSPHRASE decrypts them)", no_args_is_help=True)


class ChannelOpt(str, Enum):
    json = "json"
    xml = "xml"


class AlgorithmOpt(str, Enum):
    ed25519 = "ed25519"
    ecdsa_p256 = "ecdsa-p256"
    rsa = "rsa"


def _store():  # noqa: ANN202
    from gateway.bootstrap import open_keys

    settings = Settings()
    store = open_keys(settings)
    if store is None:
        typer.echo("set GATEWAY_KEY_PASSPHRASE: keys are encrypted at rest with it", err=True)
        raise typer.Exit(2)
    return store


def _show(info) -> None:  # noqa: ANN001
    state = "revoked" if info.revoked_at else ("retired" if info.retired_at else "active")
    until = f" valid until {info.not_after.isoformat()}" if info.not_after else ""
    typer.echo(f"{info.kid}  {info.channel:4}  {info.algorithm:10}  {state}{until}")


@keys_app.command("generate")
def generate(channel: ChannelOpt = typer.Option(ChannelOpt.json, help="json: RFC 9421; xml: ЦОН SOAP"),
             algorithm: AlgorithmOpt = typer.Option(None, help="default: ed25519 for json, rsa for xml")) -> None:
    """Create the first signing key of a channel."""
    from security.keys import KeyStoreError

    try:
        _show(_store().generate(channel=channel.value, algorithm=algorithm.value if algorithm else None))
    except KeyStoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@keys_app.command("rotate")
def rotate(channel: ChannelOpt = typer.Option(ChannelOpt.json),
           overlap_hours: float = typer.Option(48, help="the old key still verifies for this long"),
           algorithm: AlgorithmOpt = typer.Option(None)) -> None:
    """Make a new active key; the previous one keeps verifying during the overlap."""
    _show(_store().rotate(channel=channel.value, overlap=timedelta(hours=overlap_hours),
                          algorithm=algorithm.value if algorithm else None))


@keys_app.command("list")
def list_keys() -> None:
    """Every key with its channel, algorithm and state."""
    for info in _store().list():
        _show(info)


@keys_app.command("revoke")
def revoke(kid: str, reason: str = typer.Option(None)) -> None:
    """Stop a key verifying at once (compromise). A kid starting with "-" goes after `--`."""
    from security.keys import KeyStoreError

    try:
        _show(_store().revoke(kid, reason=reason))
    except KeyStoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
