"""An independent capture in front of a counterpart simulator: every request counted by its message id."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Arrival:
    at: float  # monotonic
    status: int | None = None  # what the counterpart answered (None: no answer went out)


@dataclass
class Capture:
    """ASGI middleware recording `x-message-id` of each request to the wrapped app, with arrival time and the
    status answered; it knows nothing of the gateway's or the simulator's own bookkeeping."""

    header: bytes = b"x-message-id"
    arrivals: dict[str, list[Arrival]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, app: Any) -> Any:
        async def captured(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"].startswith("/_sim"):
                return await app(scope, receive, send)
            message_id = dict(scope["headers"]).get(self.header, b"").decode() or "?"
            arrival = Arrival(time.monotonic())
            with self._lock:
                self.arrivals.setdefault(message_id, []).append(arrival)

            async def noting_send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    arrival.status = message["status"]
                await send(message)

            await app(scope, receive, noting_send)

        return captured

    # --- reading -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, list[Arrival]]:
        with self._lock:
            return {k: list(v) for k, v in self.arrivals.items()}

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.arrivals)

    def delivered(self) -> set[str]:
        """Ids answered 2xx at least once."""
        with self._lock:
            return {k for k, v in self.arrivals.items() if any(a.status and 200 <= a.status < 300 for a in v)}

    def requests(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.arrivals.values())

    def first_after(self, t: float) -> float | None:
        with self._lock:
            times = [a.at for v in self.arrivals.values() for a in v if a.at >= t]
        return min(times) if times else None
