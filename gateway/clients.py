"""Registering the gateway's clients: machine clients with a public key, people with a one-time token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.storage.clients import ClientRow, ClientStore
from security.access import MACHINE_ROLES, PERSON_ROLES, check_roles, new_token, token_hash
from security.parties import parse_pin


class ClientSpecError(ValueError):
    """A client that cannot be added as asked."""


@dataclass(frozen=True)
class AddedClient:
    row: ClientRow
    token: str | None  # shown once; only its hash is stored


async def add_client(*, clients: ClientStore, client_id: str, roles: list[str] | tuple[str, ...], now: datetime,
                     public_key: bytes | None = None, description: str | None = None) -> AddedClient:
    """A system client needs its public key (PEM certificate, PEM key or JWK); admins and auditors get a token."""
    try:
        chosen = check_roles(tuple(roles))
    except ValueError as exc:
        raise ClientSpecError(str(exc)) from exc
    if not client_id or client_id.startswith("counterpart:") or len(client_id) > 100:
        raise ClientSpecError("a client id is 1-100 characters and not counterpart:* (counterparts are pinned "
                              "in the counterparts file)")
    if chosen & MACHINE_ROLES:
        if public_key is None:
            raise ClientSpecError("a system client signs its requests: give its public key")
        pin = parse_pin(public_key)
        row = await clients.add(client_id=client_id, roles=chosen, now=now, keyid=pin.kid,
                                public_key=public_key.decode("ascii").strip(), description=description)
        return AddedClient(row, None)
    assert chosen <= PERSON_ROLES
    if public_key is not None:
        raise ClientSpecError("admins and auditors authenticate with a bearer token, not a key")
    token = new_token()
    row = await clients.add(client_id=client_id, roles=chosen, now=now, token_hash=token_hash(token),
                            description=description)
    return AddedClient(row, token)
