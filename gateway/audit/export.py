"""The exports: the events file (accepted canonical messages, for SLA reports) and the exchange-log chain file."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from gateway.audit.chain import CHECKPOINT_FIELDS, RAW_FIELDS, RECORD_FIELDS, format_time
from gateway.audit.stream import PAGE, PROGRESS_EVERY, run_on_log
from gateway.canonical.iin import mask_iin
from gateway.storage.db import Engines
from gateway.storage.store import Store

_RECORD_KEYS = frozenset(RECORD_FIELDS) | {"record"}
_CHECKPOINT_KEYS = frozenset(CHECKPOINT_FIELDS) | {"record"}


# ---- the events file: every accepted canonical message with its `received_at` -----------------------------


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


# ---- the chain file: every exchange-log record and checkpoint, for `gateway audit verify --file` -----------


class ExportFormatError(ValueError):
    """A line of an export file that is not a record or checkpoint line as `export_chain` writes them."""


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def record_line(record: Mapping[str, Any]) -> bytes:
    """One record as an export line: every column, `at` in RFC 3339, raw bytes in base64."""
    doc = {"record": "log"}
    for name in RECORD_FIELDS:
        value = record[name]
        if name == "at" and not isinstance(value, str):
            value = format_time(value)
        elif name in ("request_raw", "response_raw"):
            value = _b64(value)
        doc[name] = value
    return orjson.dumps(doc) + b"\n"


def checkpoint_line(cp: Mapping[str, Any]) -> bytes:
    doc = {"record": "checkpoint"}
    for name in CHECKPOINT_FIELDS:
        value = cp[name]
        doc[name] = format_time(value) if name == "created_at" else value
    return orjson.dumps(doc) + b"\n"


def write_export(records: Iterable[Mapping[str, Any]], checkpoints: Iterable[Mapping[str, Any]], out: BinaryIO, *,
                 progress: Callable[[int], None] | None = None) -> int:
    """Write records in seq order, each checkpoint right after the record it covers; returns the record count."""
    cps = iter(checkpoints)
    cp = next(cps, None)
    while cp is not None and cp["size"] == 0:
        out.write(checkpoint_line(cp))
        cp = next(cps, None)
    count = 0
    for record in records:
        out.write(record_line(record))
        count += 1
        while cp is not None and cp["size"] <= record["seq"]:
            out.write(checkpoint_line(cp))
            cp = next(cps, None)
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
    while cp is not None:
        out.write(checkpoint_line(cp))
        cp = next(cps, None)
    if progress is not None:
        progress(count)
    return count


async def export_chain(*, engines: Engines, out: BinaryIO, progress: Callable[[int], None] | None = None,
                       page: int = PAGE) -> int:
    """Write the whole log and its checkpoints as JSON lines (a consistent prefix while appends go on).

    Record lines are `{"record": "log", ...every column...}`, checkpoint lines
    `{"record": "checkpoint", ...}`; `gateway audit verify --file` checks such a file offline."""
    return await run_on_log(engines=engines, page=page,
                            work=lambda records, cps: write_export(records, cps, out, progress=progress))


def _parse_line(line: bytes, number: int) -> dict[str, Any]:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ExportFormatError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ExportFormatError(f"line {number}: not a JSON object")
    kind = doc.get("record")
    if kind == "log":
        if doc.keys() != _RECORD_KEYS:
            raise ExportFormatError(f"line {number}: a record line needs exactly the fields {sorted(_RECORD_KEYS)}")
        for name, _ in RAW_FIELDS:
            if doc[name] is not None:
                try:
                    doc[name] = base64.b64decode(doc[name], validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise ExportFormatError(f"line {number}: {name} is not base64") from None
    elif kind == "checkpoint":
        if doc.keys() != _CHECKPOINT_KEYS:
            raise ExportFormatError(f"line {number}: a checkpoint line needs exactly the fields {sorted(_CHECKPOINT_KEYS)}")
    else:
        raise ExportFormatError(f"line {number}: `record` must be \"log\" or \"checkpoint\", not {kind!r}")
    return doc


def read_export(path: Path, *, kind: Literal["log", "checkpoint"]) -> Iterator[dict[str, Any]]:
    """The record (or checkpoint) lines of an export file, in file order, parsed lazily."""
    checkpoint_prefix = b'{"record":"checkpoint"'
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            # Cheap skip of the other kind; a line that is neither still gets parsed (and refused).
            is_cp = line.startswith(checkpoint_prefix)
            if (kind == "log" and is_cp) or (kind == "checkpoint" and line.startswith(b'{"record":"log"')):
                continue
            doc = _parse_line(line, number)
            if doc["record"] == kind:
                yield doc
