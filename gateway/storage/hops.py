"""The one builder of hop rows: every call across the wire and every action at the gateway is one of these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

# Keys a hop row may carry for the exchange log only; the operational `exchanges` table has no columns for them.
LOG_ONLY = ("case_id", "client", "signer", "iin", "iin_hash", "request_raw", "response_raw", "request_hash",
            "response_hash")


def hop_row(*, hop: str, peer: str, result: str, message_id: str | None = None, delivery_id: int | None = None,
            attempt: int | None = None, request_in_at: datetime | None = None,
            request_out_at: datetime | None = None, response_in_at: datetime | None = None,
            response_out_at: datetime | None = None, request_bytes: int | None = None,
            response_bytes: int | None = None, status_code: int | None = None, error: str | None = None,
            **log_only: Any) -> dict[str, Any]:
    """A hop row with every operational column; `log_only` takes only the exchange log's own keys (LOG_ONLY)."""
    unknown = set(log_only) - set(LOG_ONLY)
    if unknown:
        raise TypeError(f"not hop columns: {', '.join(sorted(unknown))}")
    return {"message_id": message_id, "delivery_id": delivery_id, "hop": hop, "peer": peer, "attempt": attempt,
            "request_in_at": request_in_at, "request_out_at": request_out_at, "response_in_at": response_in_at,
            "response_out_at": response_out_at, "request_bytes": request_bytes, "response_bytes": response_bytes,
            "status_code": status_code, "result": result, "error": error, **log_only}


def action_row(*, hop: str, peer: str, at: datetime, result: str, error: str, received_at: datetime | None = None,
               status_code: int = 200, **extra: Any) -> dict[str, Any]:
    """A hop that is an action at the gateway (a refusal, a record read, an auditor's or admin's act), not a
    call across the wire; `extra` sets other hop columns and the log-only keys (client, request_raw, ...)."""
    return hop_row(**{"hop": hop, "peer": peer, "request_in_at": received_at or at, "response_out_at": at,
                      "status_code": status_code, "result": result, "error": error, **extra})
