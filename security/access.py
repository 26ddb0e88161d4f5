"""Identities and roles: who a verified caller is and what each role may do; no I/O here."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

# system: the Probation IS (submits messages, requests documents); admin: configures adapters;
# auditor: reads the exchange log and personal data with a reason. Counterparts are principals of
# their own kind ("counterpart"), identified by the key pinned to their instance, never added as clients.
CLIENT_ROLES = ("system", "admin", "auditor")
MACHINE_ROLES = frozenset({"system"})
PERSON_ROLES = frozenset({"admin", "auditor"})
TOKEN_PREFIX = "pgw_"


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller as established by a verified signature or token; never from a header it merely claims."""

    client_id: str  # a client's name, or "counterpart:<instance>"
    roles: frozenset[str]
    via: str  # signature | xml-signature | token | unsigned-legacy
    keyid: str | None = None
    instance: str | None = None  # for counterparts: the instance whose pinned key verified

    def has_any(self, roles: frozenset[str] | set[str] | tuple[str, ...]) -> bool:
        return not self.roles.isdisjoint(roles)


def new_token() -> str:
    """A bearer token for a person: 256 random bits, shown once, kept only as its hash."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # A plain SHA-256 is enough: the token is 256 random bits, so there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_roles(roles: tuple[str, ...] | list[str]) -> frozenset[str]:
    """Roles given to `gateway clients add`: known, and not machine and person roles mixed."""
    if not roles:
        raise ValueError("at least one role is required")
    unknown = sorted(set(roles) - set(CLIENT_ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(CLIENT_ROLES)}")
    chosen = frozenset(roles)
    if chosen & MACHINE_ROLES and chosen & PERSON_ROLES:
        raise ValueError("a machine client (system) signs with a key; people (admin, auditor) use tokens: "
                         "add them as separate clients")
    return chosen
