"""Every hop the store records also goes to the hash-chained exchange log, with its raw bytes encrypted."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any


from gateway.pipeline.ports import Tx
from gateway.audit.chain import LogEntry, append
from security.pii import PiiCipher

_DETAIL = ("attempt", "request_in_at", "request_out_at", "response_in_at", "response_out_at", "request_bytes",
           "response_bytes", "error")


class ExchangeLog:
    """Turns hop rows into chained log records inside the same transaction (no hop without its record)."""

    def __init__(self, *, cipher: PiiCipher, on_appended: Callable[[int], None] | None = None) -> None:
        self.cipher = cipher
        self.on_appended = on_appended

    def _sealed(self, raw: bytes | None) -> bytes | None:
        # Wire bytes hold personal data: at rest they are AES-GCM sealed; the chain hashes what is stored.
        if raw is None:
            return None
        return self.cipher.encrypt(base64.b64encode(raw).decode("ascii"), context="wire").encode("ascii")

    def open_raw(self, stored: bytes | None) -> bytes | None:
        """The clear wire bytes, for the auditor's detail view."""
        if stored is None:
            return None
        return base64.b64decode(self.cipher.decrypt(stored.decode("ascii"), context="wire"))

    def entry(self, row: dict[str, Any], extra: dict[str, Any]) -> LogEntry:
        at: datetime = (row.get("response_out_at") or row.get("response_in_at") or row.get("request_out_at")
                        or row.get("request_in_at"))
        iin_hash = extra.get("iin_hash") or (self.cipher.hash(extra["iin"]) if extra.get("iin") else None)
        detail = {k: (v.isoformat() if isinstance(v, datetime) else v) for k in _DETAIL
                  if (v := row.get(k)) is not None}
        request_raw, response_raw = extra.get("request_raw"), extra.get("response_raw")
        return LogEntry(
            at=at, kind=row["hop"], message_id=row.get("message_id"), delivery_id=row.get("delivery_id"),
            case_id=extra.get("case_id"), peer=row.get("peer"), client=extra.get("client"),
            signer=extra.get("signer"), iin_hash=iin_hash, status_code=row.get("status_code"),
            result=row.get("result"),
            request_hash=None if request_raw is not None else extra.get("request_hash"),
            response_hash=None if response_raw is not None else extra.get("response_hash"),
            request_raw=self._sealed(request_raw), response_raw=self._sealed(response_raw),
            detail=detail or None,
        )

    def append(self, conn: Tx, rows: list[dict[str, Any]], extras: list[dict[str, Any]]) -> None:
        seqs = append(conn, [self.entry(row, extra) for row, extra in zip(rows, extras)])
        if self.on_appended is not None:
            self.on_appended(len(seqs))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
