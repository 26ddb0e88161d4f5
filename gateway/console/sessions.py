"""Console sign-in: a person's token exchanged once for a server-side session, with throttled failures."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.access import ClientDirectory, SecurityEvents
from gateway.canonical.errors import GatewayError
from gateway.wire import Clock
from gateway.storage.sessions import SessionRow, SessionStore
from security.access import Principal, token_hash

CONSOLE_ROLES = frozenset({"admin", "auditor"})
# A session is touched at most this often: every page view would otherwise be a write.
TOUCH_EVERY = timedelta(seconds=60)


class SignInRefused(GatewayError):
    slug = "sign-in-refused"
    status = 401
    title = "The token is not valid for the console"


class SignInThrottled(GatewayError):
    slug = "sign-in-throttled"
    status = 429
    title = "Too many failed sign-ins"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id_hash: str
    principal: Principal
    csrf: str
    expires_at: datetime

    def csrf_matches(self, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(self.csrf.encode(), submitted.encode())


class FailureThrottle:
    """Failed sign-ins per source address in a sliding `window_s`, per process, in memory.

    A valid token always signs in: a neighbour behind the same address (a NAT, a proxy) who mistypes cannot
    lock anyone out. The limit bounds what failures cost: past `limit` in a window they are refused with 429
    and only the first of them is logged, so a flood cannot grow the append-only log. Per process is enough:
    a failure gives nothing a guess can use (tokens are 256 random bits)."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._since_sweep = 0

    def _recent(self, source: str, now: float) -> deque[float]:
        seen = self._failures.setdefault(source, deque())
        while seen and now - seen[0] > self.window_s:
            seen.popleft()
        return seen

    def failed(self, source: str) -> tuple[str, int]:
        """Count a failure now (before any await, so parallel attempts count too): ("log", 0) within the limit,
        ("first-throttled", wait) for the first one past it, ("throttled", wait) after that."""
        now = time.monotonic()
        seen = self._recent(source, now)
        seen.append(now)
        self._sweep(now)
        if len(seen) <= self.limit:
            return "log", 0
        wait = max(1, int(self.window_s - (now - seen[0])) + 1)
        return ("first-throttled" if len(seen) == self.limit + 1 else "throttled"), wait

    def _sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < 1_000 and len(self._failures) < 10_000:
            return
        self._since_sweep = 0
        for key in [k for k, v in self._failures.items() if not v or now - v[-1] > self.window_s]:
            del self._failures[key]


class ConsoleSessions:
    """Sign in, resolve a cookie to a session (idle and absolute expiry, client still valid), sign out."""

    def __init__(self, *, sessions: SessionStore, directory: ClientDirectory, events: SecurityEvents, clock: Clock,
                 idle: timedelta, lifetime: timedelta, throttle: FailureThrottle) -> None:
        self.sessions = sessions
        self.directory = directory
        self.events = events
        self.clock = clock
        self.idle = idle
        self.lifetime = lifetime
        self.throttle = throttle

    async def refused(self, *, source: str, path: str, reason: str, client: str | None = None) -> None:
        """A failed sign-in (or a sign-in form without its CSRF token): logged while within the limit, then
        one `console-sign-in-throttled` record and 429s. Never the token, nor its hash: a mistyped token is
        still most of a real one."""
        verdict, wait = self.throttle.failed(source)
        if verdict == "log":
            await self.events.refused(client=client, reason=reason, method="POST", path=path, status=401)
            return
        if verdict == "first-throttled":
            await self.events.refused(client=None, reason="console-sign-in-throttled", method="POST", path=path,
                                      status=429)
        raise SignInThrottled(f"too many failed sign-ins from {source}", retry_after_s=wait)

    async def sign_in(self, *, token: str, source: str, path: str) -> tuple[str, ConsoleSession]:
        """The cookie value (shown to the browser only) and the session; refusals are security events."""
        client = await self.directory.by_token_hash(token_hash(token.strip())) if token.strip() else None
        row = client.row if client is not None else None
        if row is None or row.revoked_at is not None or not (row.roles & CONSOLE_ROLES):
            reason = "console-sign-in-failed" if row is None else (
                "revoked-client" if row.revoked_at is not None else "console-role-missing")
            await self.refused(source=source, path=path, reason=reason, client=row.client_id if row else None)
            raise SignInRefused("the token is unknown, revoked, or not an administrator's or auditor's")
        cookie = secrets.token_urlsafe(32)
        now = self.clock()
        stored = SessionRow(id_hash=_hash(cookie), client_id=row.client_id, csrf=secrets.token_urlsafe(24),
                            created_at=now, last_seen_at=now, expires_at=now + self.lifetime, ended_at=None)
        await self.sessions.create(stored)
        return cookie, ConsoleSession(stored.id_hash, Principal(row.client_id, row.roles, "session"), stored.csrf,
                                      stored.expires_at)

    async def resolve(self, cookie: str | None) -> ConsoleSession | None:
        """The live session of a cookie, or None (unknown, ended, idle too long, expired, client revoked)."""
        if not cookie:
            return None
        row = await self.sessions.get(_hash(cookie))
        now = self.clock()
        if row is None or row.ended_at is not None or row.expires_at <= now or row.last_seen_at + self.idle <= now:
            return None
        client = await self.directory.by_client_id(row.client_id)
        if client is None or client.revoked_at is not None:
            return None
        self.directory.note_use(client.client_id, now)
        if now - row.last_seen_at >= TOUCH_EVERY:
            await self.sessions.touch(id_hash=row.id_hash, at=now)
        return ConsoleSession(row.id_hash, Principal(client.client_id, client.roles, "session"), row.csrf,
                              row.expires_at)

    async def sign_out(self, session: ConsoleSession) -> None:
        await self.sessions.end(id_hash=session.id_hash, at=self.clock())


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("ascii")).hexdigest()
