"""Store outages as a typed error: which database failures mean "the store cannot be reached or written"."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from gateway.canonical.errors import GatewayError

RETRY_AFTER_S = 5

# SQLite's own faults, by the text its driver gives them (sqlite3 has no error codes before 3.11's sqlite_errorname).
_SQLITE_REASONS = (
    ("database or disk is full", "disk full"),
    ("readonly database", "database file is read-only"),
    ("database is locked", "database locked by another writer"),
    ("unable to open database file", "database file cannot be opened"),
    ("disk i/o error", "disk I/O error"),
)
_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                   errno.ETIMEDOUT, errno.EPIPE, errno.ENOTCONN}


class StoreUnavailable(GatewayError):
    """The store cannot be reached or written just now; nothing of the request was written."""

    slug = "store-unavailable"
    status = 503
    title = "The store is unavailable; nothing was written, try again later"

    def __init__(self, detail: str, *, reason: str = "store unreachable", retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]


# A failure towards a counterpart carries the socket error too: it is not the store's.
_TRANSPORT_MODULES = ("gateway.wire", "httpx", "httpcore", "aiohttp", "httpx_aiohttp", "smtplib")


def outage_reason(exc: BaseException) -> str | None:
    """Why `exc` means the store is unavailable (a short phrase), or None when it is some other failure."""
    chain = list(_chain(exc))
    if any((type(e).__module__ or "").startswith(_TRANSPORT_MODULES) for e in chain):
        return None
    for e in chain:
        if isinstance(e, StoreUnavailable):
            return e.reason
        text = str(e).lower()
        for needle, reason in _SQLITE_REASONS:
            if needle in text:
                return reason
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return "connection to the store lost"
        if isinstance(e, sa_exc.TimeoutError):  # the pool had no connection to give within pool_timeout
            return "no store connection free"
        name = type(e).__name__
        module = type(e).__module__ or ""
        if module.startswith("asyncpg") and (
                "Connection" in name or name in ("CannotConnectNowError", "AdminShutdownError", "CrashShutdownError",
                                                 "TooManyConnectionsError", "InterfaceError")):
            return f"store connection failed ({name})"
        if isinstance(e, (ConnectionError, socket.gaierror)) or (
                isinstance(e, OSError) and e.errno in _NETWORK_ERRNOS):
            return f"store unreachable ({name})"
        if isinstance(e, TimeoutError):
            return "store did not answer in time"
    return None


def as_unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The typed error for an outage (the same object when it already is one), or None."""
    if isinstance(exc, StoreUnavailable):
        return exc
    reason = outage_reason(exc)
    if reason is None:
        return None
    return StoreUnavailable(f"the store is unavailable ({reason}); nothing of this request was written",
                            reason=reason)
