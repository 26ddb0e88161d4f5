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
from gateway.pipeline.ports import Clock
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
    """At most `limit` failed sign-ins per source address in a sliding `window_s`; per process, in memory.

    Per process is enough here: a failure costs a hash and a log record, nothing a guess can use, and the
    tokens are 256 random bits; the limit is there so a flood cannot grow the log without bound."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, source: str, now: float) -> deque[float]:
        seen = self._failures.setdefault(source, deque())
        while seen and now - seen[0] > self.window_s:
            seen.popleft()
        return seen

    def retry_after(self, source: str) -> int | None:
        now = time.monotonic()
        seen = self._recent(source, now)
        if len(seen) < self.limit:
            return None
        return max(1, int(self.window_s - (now - seen[0])) + 1)

    def failed(self, source: str) -> None:
        now = time.monotonic()
        self._recent(source, now).append(now)
        if len(self._failures) > 10_000:  # a spray from many addresses: forget the oldest quiet ones
            for key in [k for k, v in self._failures.items() if not v][:5_000]:
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

    async def sign_in(self, *, token: str, source: str, path: str) -> tuple[str, ConsoleSession]:
        """The cookie value (shown to the browser only) and the session; refusals are security events."""
        wait = self.throttle.retry_after(source)
        if wait is not None:
            await self.events.refused(client=None, reason="console-sign-in-throttled", method="POST", path=path,
                                      status=429)
            raise SignInThrottled(f"too many failed sign-ins from {source}", retry_after_s=wait)
        client = await self.directory.by_token_hash(token_hash(token.strip())) if token.strip() else None
        row = client.row if client is not None else None
        if row is None or row.revoked_at is not None or not (row.roles & CONSOLE_ROLES):
            self.throttle.failed(source)
            reason = "console-sign-in-failed" if row is None else (
                "revoked-client" if row.revoked_at is not None else "console-role-missing")
            # Never the token, nor its hash: a mistyped token is still most of a real one.
            await self.events.refused(client=row.client_id if row else None, reason=reason, method="POST",
                                      path=path, status=401)
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
