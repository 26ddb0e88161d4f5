"""Bottom-floor types every layer shares: bytes on the wire, the clock, and how a send can fail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable


@dataclass(frozen=True, slots=True)
class WireRequest:
    """Bytes as they go on the wire; signing, sending and logging work on this, never on adapters."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


@dataclass(frozen=True, slots=True)
class WireResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class TransportFailure(Exception):
    """A send that got no HTTP answer; the transport maps its library's errors to these, so nothing above it
    depends on that library. `sent` says whether the request may have reached the counterpart."""

    sent = True


class NotSent(TransportFailure):
    """The connection was never made: nothing reached the counterpart."""

    sent = False


class ConnectionRefused(NotSent):
    """Nothing listens at the counterpart's address (the host answered; nothing was sent)."""


class NameNotResolved(NotSent):
    """The counterpart's host name does not resolve (nothing was sent)."""


class TlsFailure(NotSent):
    """The TLS handshake failed: an untrusted or invalid certificate, or no TLS at the other end."""


class ConnectTimeout(NotSent):
    """No connection within the instance's timeout."""


class ConnectFailed(NotSent):
    """Some other failure to connect."""


class PeerDisconnected(TransportFailure):
    """The counterpart closed the connection after the request was sent: it may well have arrived."""


class ReadTimeout(TransportFailure):
    """No answer within the instance's timeout (read, write or pool): the request may be at the counterpart."""


class ConnectionLost(TransportFailure):
    """Another network failure while the exchange was under way."""


class TransportBroken(TransportFailure):
    """A failure of the transport itself, not of the network: retrying will not help."""
