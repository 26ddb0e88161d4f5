"""`events` export: every accepted canonical message with its `received_at`, one JSON line each, IIN masked."""

from __future__ import annotations

from datetime import datetime
from typing import AsyncIterator, BinaryIO

import orjson

from gateway.canonical.iin import mask_iin
from gateway.storage.store import Store


def event_line(content: bytes, received_at: datetime) -> bytes:
    """One line of the events file: the canonical message as accepted, plus the gateway's received_at."""
    doc = orjson.loads(content)
    person = doc.get("body", {}).get("person")
    if isinstance(person, dict) and "iin" in person:
        person["iin"] = mask_iin(person["iin"])  # an export leaves the gateway: no clear IIN in it
    doc["received_at"] = received_at.isoformat().replace("+00:00", "Z")
    return orjson.dumps(doc) + b"\n"


async def export_events(*, store: Store, out: BinaryIO, until: datetime | None = None) -> int:
    """Write the events file in acceptance order; returns how many lines were written."""
    count = 0
    async for line in iter_event_lines(store=store, until=until):
        out.write(line)
        count += 1
    return count


async def iter_event_lines(*, store: Store, until: datetime | None = None, since: datetime | None = None,
                           case_id: str | None = None) -> AsyncIterator[bytes]:
    async for content, received_at in store.iter_messages(until=until, since=since, case_id=case_id):
        yield event_line(content, received_at)
