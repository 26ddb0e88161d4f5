"""Verification of the exchange log's chain and checkpoints, online from the store or offline from an export."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from sqlalchemy import and_, column, create_engine, func, or_, select
from sqlalchemy.engine import Connection

from gateway.audit.chain import (
    CHECKPOINT_FIELDS,
    GENESIS,
    KeyResolver,
    RAW_FIELDS,
    RECORD_FIELDS,
    canonical_with_digests,
    checkpoint_problem,
    format_time,
)
from gateway.storage.audit_tables import audit_checkpoints, exchange_log
from gateway.storage.db import Engines

ProblemKind = Literal["edited", "deleted", "inserted", "reordered", "truncated", "bad-checkpoint-signature"]
PAGE = 5_000  # rows per query: ~6 MiB of records in memory at most
PROGRESS_EVERY = 10_000
_RECORD_KEYS = frozenset(RECORD_FIELDS) | {"record"}
_CHECKPOINT_KEYS = frozenset(CHECKPOINT_FIELDS) | {"record"}


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    seq: int | None  # the record named; for a checkpoint problem, the size it claims
    detail: str
    checkpoint_id: int | None = None

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "log"
        cp = f" (checkpoint {self.checkpoint_id})" if self.checkpoint_id is not None else ""
        return f"{where}: {self.kind}{cp}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int  # records found intact, all of them or those before the record named by the problem
    checkpoints: int  # checkpoints whose signature (when checked) and head matched
    head_seq: int
    head_hash: str
    signatures_checked: bool
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class ExportFormatError(ValueError):
    """A line of an export file that is not a record or checkpoint line as `export_chain` writes them."""


def _digests(record: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Digests of the raw fields (None when absent) and the name of a raw field not matching its hash."""
    request, response = record["request_raw"], record["response_raw"]
    req = None if request is None else hashlib.sha256(request).hexdigest()
    resp = None if response is None else hashlib.sha256(response).hexdigest()
    if req is not None and req != record["request_hash"]:
        return req, resp, "request_raw"
    if resp is not None and resp != record["response_hash"]:
        return req, resp, "response_raw"
    return req, resp, None


def _hash_as(record: Mapping[str, Any], digests: tuple[str | None, str | None], seq: int) -> str | None:
    """The record's hash as if its seq were `seq`; None when its fields cannot be hashed at all."""
    try:
        moved = dict(record, seq=seq) if seq != record["seq"] else record
        return hashlib.sha256(bytes.fromhex(record["prev_hash"]) + canonical_with_digests(moved, *digests)).hexdigest()
    except (ValueError, TypeError, KeyError, orjson.JSONEncodeError):
        return None


class _Verifier:
    def __init__(self, public_key: KeyResolver | None) -> None:
        self.public_key = public_key
        self.last_seq = 0
        self.last_hash = GENESIS
        self.before_last_hash: str | None = None  # hash of record last_seq - 1
        self.records = 0
        self.checkpoints = 0
        self.last_checkpoint: tuple[int, int] = (-1, -1)  # (size, id) of the previous checkpoint seen

    def record(self, cur: Mapping[str, Any], nxt: Mapping[str, Any] | None) -> Problem | None:
        seq = cur["seq"]
        if type(seq) is not int:
            return Problem("edited", None, f"a record after seq {self.last_seq} has seq {seq!r}, not a number")
        expected = self.last_seq + 1
        if seq < expected:
            if seq == self.last_seq:
                return Problem("inserted", seq, f"seq {seq} appears twice")
            return Problem("reordered", seq, f"seq {seq} comes after seq {self.last_seq}")
        if seq > expected:
            if nxt is not None and type(nxt["seq"]) is int and nxt["seq"] < seq:
                return Problem("reordered", nxt["seq"], f"seq {nxt['seq']} comes after seq {seq}")
            missing = f"record {expected} is" if seq == expected + 1 else f"records {expected}..{seq - 1} are"
            return Problem("deleted", expected, f"{missing} missing")

        req, resp, bad_raw = _digests(cur)
        if bad_raw is not None:
            return Problem("edited", seq, f"{bad_raw} does not match its hash")
        digests = (req, resp)
        if _hash_as(cur, digests, seq) != cur["hash"]:
            return self._unhashable(cur, nxt, digests)
        if cur["prev_hash"] != self.last_hash:
            return self._unlinked(cur, nxt)
        self.before_last_hash = self.last_hash
        self.last_seq, self.last_hash = seq, cur["hash"]
        self.records += 1
        return None

    def _unhashable(self, cur: Mapping[str, Any], nxt: Mapping[str, Any] | None,
                    digests: tuple[str | None, str | None]) -> Problem:
        seq = cur["seq"]
        if _hash_as(cur, digests, seq + 1) == cur["hash"]:
            # Hashed as the next record: moved down one place, either swapped with its predecessor or
            # shifted down over a deleted record.
            if nxt is not None and nxt["hash"] == cur["prev_hash"]:
                return Problem("reordered", seq, f"records {seq} and {seq + 1} were swapped")
            return Problem("deleted", seq, f"record {seq} is missing; the records after it were renumbered")
        if seq > 1 and _hash_as(cur, digests, seq - 1) == cur["hash"]:
            if self.last_seq >= 1 and cur["prev_hash"] == self.before_last_hash:
                return Problem("inserted", self.last_seq,
                               f"record {self.last_seq} was inserted; the records after it were renumbered")
            return Problem("reordered", seq, f"record {seq} was hashed as record {seq - 1}")
        return Problem("edited", seq, "its content does not match its hash")

    def _unlinked(self, cur: Mapping[str, Any], nxt: Mapping[str, Any] | None) -> Problem:
        seq = cur["seq"]
        if self.last_seq >= 1 and cur["prev_hash"] == self.before_last_hash:
            return Problem("inserted", self.last_seq,
                           f"record {self.last_seq} is not in the chain: record {seq} links to the one before it")
        if (self.last_seq >= 1 and nxt is not None and nxt["seq"] == seq + 1 and nxt["prev_hash"] == cur["hash"]
                and _hash_as(nxt, _digests(nxt)[:2], seq + 1) == nxt["hash"]):
            # The chain goes on from this record: it is genuine, its predecessor was rewritten and re-hashed.
            return Problem("edited", self.last_seq,
                           f"record {self.last_seq} was changed and re-hashed; record {seq} links to its original")
        return Problem("inserted", seq, "its hash is consistent but it does not link to the record before it")

    def checked_checkpoint(self, cp: Mapping[str, Any]) -> Problem | None:
        try:
            return self.checkpoint(cp)
        except (KeyError, TypeError, AttributeError) as exc:
            return Problem("bad-checkpoint-signature", None, f"checkpoint malformed: {exc!r}", cp.get("id"))

    def checkpoint(self, cp: Mapping[str, Any]) -> Problem | None:
        """Check a checkpoint once every record up to its size has been seen (or the records ran out)."""
        cp_id, size = cp["id"], cp["size"]
        if type(size) is not int or size < 0:
            return Problem("bad-checkpoint-signature", None, f"size {size!r} is not a record count", cp_id)
        if (size, cp_id) < self.last_checkpoint:
            return Problem("reordered", size, "checkpoints are not in order of size", cp_id)
        self.last_checkpoint = (size, cp_id)
        if self.public_key is not None:
            key = self.public_key(str(cp["kid"]))
            if key is None:
                return Problem("bad-checkpoint-signature", size, f"no trusted public key for kid {cp['kid']!r}", cp_id)
            problem = checkpoint_problem(key, cp)
            if problem is not None:
                return Problem("bad-checkpoint-signature", size, problem, cp_id)
        if size > self.last_seq:
            return Problem("truncated", self.last_seq + 1,
                           f"checkpoint covers {size} records, the log ends at seq {self.last_seq}", cp_id)
        head = self.last_hash if size == self.last_seq else GENESIS if size == 0 else None
        if head is None:
            # Only reachable for checkpoints given out of step with the records.
            return Problem("reordered", size, "checkpoint seen after the records it covers", cp_id)
        if cp["head_hash"] != head:
            return Problem("truncated", size,
                           f"checkpoint says record {size} has hash {cp['head_hash']}, the log has {head}: "
                           "the log was cut back and rewritten up to here", cp_id)
        self.checkpoints += 1
        return None


def verify_records(records: Iterable[Mapping[str, Any]], checkpoints: Iterable[Mapping[str, Any]], *,
                   public_key: KeyResolver | None,
                   progress: Callable[[int], None] | None = None,
                   progress_every: int = PROGRESS_EVERY) -> VerifyReport:
    """Recompute the chain over `records` (in the order given) and check `checkpoints` (in order of
    size); stop at the first problem. Streaming: memory does not grow with the log.

    Records are dicts with every column (`at` a datetime or its RFC 3339 form, raw fields as bytes);
    checkpoints have id, size, head_hash, created_at, kid, alg, signature (base64). `public_key`
    resolves a kid to a trusted key; None skips signature checks (heads are still compared).
    `progress` gets the number of records verified so far, every `progress_every` records.

    The first problem is named by these rules, checked in this order for each record, where
    "expected" is the seq after the last intact record:

    - seq lower than expected: `inserted` when it repeats the previous seq, else `reordered`.
    - seq higher than expected: `reordered` (named by the lower seq) when the next record goes back
      down, else `deleted` naming the first missing seq.
    - a raw body whose SHA-256 differs from its recorded hash: `edited`.
    - the hash does not match the content: when it matches the content with seq + 1, the record was
      moved down one place: `reordered` if the next record is its original predecessor (a swap), else
      `deleted` (the missing record's successors were renumbered); when it matches with seq - 1 and
      links to the record before the previous one, the previous record was `inserted` (its successors
      renumbered); otherwise `edited`.
    - the hash matches but prev_hash does not link to the previous record: `inserted` naming the
      previous record when this one links to the record before it; `edited` naming the previous record
      when the next record links to this one (this one is genuine, its predecessor was re-hashed);
      otherwise `inserted` naming this record.
    - a checkpoint: `bad-checkpoint-signature` when its key is unknown (or revoked) or the signature
      does not verify; `truncated` when it covers more records than there are, or when its head hash
      differs from the hash of the record at its size; `reordered` when checkpoints are not given in
      order of size.

    What the data cannot show: records rewritten together with every hash after them are caught only
    by a checkpoint covering them (named `truncated`); records appended after the last checkpoint
    with a correct chain, or the tail cut back past the last checkpoint, are not detectable; a record
    moved by more than one place reads as `deleted` where it is missing."""
    v = _Verifier(public_key)
    cps = iter(checkpoints)
    cp = next(cps, None)
    it = iter(records)
    cur = next(it, None)
    next_progress = progress_every
    while True:
        # Checkpoints are checked as soon as the records they cover are in (size 0: before any).
        while cp is not None and (cur is None or not _after(cp, v.last_seq)):
            if problem := v.checked_checkpoint(cp):
                return _report(v, problem)
            cp = next(cps, None)
        if cur is None:
            break
        nxt = next(it, None)
        try:
            problem = v.record(cur, nxt)
        except (KeyError, TypeError, AttributeError) as exc:
            problem = Problem("edited", v.last_seq + 1, f"record malformed: {exc!r}")
        if problem is not None:
            return _report(v, problem)
        if progress is not None and v.records >= next_progress:
            progress(v.records)
            next_progress += progress_every
        cur = nxt
    if progress is not None:
        progress(v.records)
    return _report(v, None)


def _after(cp: Mapping[str, Any], last_seq: int) -> bool:
    """Whether a checkpoint covers records not seen yet (a malformed size is checked at once)."""
    size = cp.get("size")
    return type(size) is int and size > last_seq


def _report(v: _Verifier, problem: Problem | None) -> VerifyReport:
    records = v.records
    if problem is not None and problem.seq is not None and problem.kind != "bad-checkpoint-signature":
        # Some problems are named at a record already passed (a re-hashed predecessor, an insertion).
        records = min(records, problem.seq - 1)
    return VerifyReport(records=records, checkpoints=v.checkpoints, head_seq=v.last_seq, head_hash=v.last_hash,
                        signatures_checked=v.public_key is not None, problem=problem)


# ---- reading the store -----------------------------------------------------------------------------

# Untyped on purpose: the driver's own values, without SQLAlchemy's per-value result processing
# (a third of the read time); `_stored_time` turns what each backend gives for `at` into RFC 3339.
_RECORD_COLUMNS = [column(name) for name in RECORD_FIELDS]
_CHECKPOINT_COLUMNS = [audit_checkpoints.c[name] for name in CHECKPOINT_FIELDS]


def _bounds(conn: Connection) -> tuple[int, int]:
    """(last checkpoint id, last seq), read in this order.

    Every checkpoint committed before the head is read covers records at or below that head, so a
    log still growing during verification is read as one consistent prefix, and a checkpoint beyond
    the records read means truncation, not a race."""
    cp_max = conn.execute(select(func.max(audit_checkpoints.c.id))).scalar() or 0
    seq_max = conn.execute(select(func.max(exchange_log.c.seq))).scalar() or 0
    return cp_max, seq_max


def _stored_time(value: datetime | str) -> str:
    if isinstance(value, str):
        # SQLite keeps UTCDateTime as naive UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`.
        if len(value) == 26 and value[10] == " ":
            return f"{value[:10]}T{value[11:]}Z"
        return format_time(datetime.fromisoformat(value).replace(tzinfo=timezone.utc))
    return format_time(value)


def _record_page(conn: Connection, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
    """Records after seq `after`, `at` as its RFC 3339 text (what the hash covers)."""
    rows = conn.execute(
        select(*_RECORD_COLUMNS).select_from(exchange_log)
        .where(exchange_log.c.seq > after, exchange_log.c.seq <= upto)
        .order_by(exchange_log.c.seq).limit(limit)
    ).all()
    out = []
    for row in rows:
        record = dict(zip(RECORD_FIELDS, row))
        record["at"] = _stored_time(record["at"])
        out.append(record)
    return out


def _checkpoint_page(conn: Connection, after: tuple[int, int], upto_id: int, limit: int) -> list[dict[str, Any]]:
    size, cp_id = after
    cps = audit_checkpoints.c
    rows = conn.execute(
        select(*_CHECKPOINT_COLUMNS)
        .where(cps.id <= upto_id, or_(cps.size > size, and_(cps.size == size, cps.id > cp_id)))
        .order_by(cps.size, cps.id).limit(limit)
    ).all()
    return [dict(zip(CHECKPOINT_FIELDS, row)) for row in rows]


PageFetch = Callable[[Callable[[Connection], list[dict[str, Any]]]], list[dict[str, Any]]]


def _stream(fetch: PageFetch, *, upto_seq: int, upto_cp: int, page: int
            ) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """Records in seq order and checkpoints in size order, a page per query (keyset pagination)."""

    def records() -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            rows = fetch(lambda c: _record_page(c, after, upto_seq, page))
            if not rows:
                return
            yield from rows
            after = rows[-1]["seq"]

    def checkpoints() -> Iterator[dict[str, Any]]:
        after = (-1, 0)
        while True:
            rows = fetch(lambda c: _checkpoint_page(c, after, upto_cp, page))
            if not rows:
                return
            yield from rows
            after = (rows[-1]["size"], rows[-1]["id"])

    return records(), checkpoints()


def stream_connection(conn: Connection, *, page: int = PAGE
                      ) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """(records in seq order, checkpoints in size order) of the log as it is now, read a page at a time."""
    cp_max, seq_max = _bounds(conn)
    return _stream(lambda q: q(conn), upto_seq=seq_max, upto_cp=cp_max, page=page)


def verify_connection(conn: Connection, *, public_key: KeyResolver | None,
                      progress: Callable[[int], None] | None = None, page: int = PAGE) -> VerifyReport:
    """Verify the log through a sync connection (SQLite's stdlib driver, or run_sync on PostgreSQL)."""
    records, cps = stream_connection(conn, page=page)
    return verify_records(records, cps, public_key=public_key, progress=progress)


async def _threaded(engines: Engines, work: Callable[[Iterator[dict[str, Any]], Iterator[dict[str, Any]]], Any],
                    *, page: int) -> Any:
    """Run `work(records, checkpoints)` in a thread so hashing never blocks the event loop.

    SQLite: the thread reads through its own stdlib-driver engine (no hop per page). PostgreSQL: each
    page is fetched by the event loop on asyncpg and handed to the thread."""
    url = engines.read.url
    if url.get_backend_name() == "sqlite":
        def in_thread() -> Any:
            engine = create_engine(url.set(drivername="sqlite"))
            try:
                with engine.connect() as conn:
                    return work(*stream_connection(conn, page=page))
            finally:
                engine.dispose()

        return await asyncio.to_thread(in_thread)

    loop = asyncio.get_running_loop()

    async def run(query: Callable[[Connection], Any]) -> Any:
        async with engines.read.connect() as aconn:
            return await aconn.run_sync(query)

    def fetch(query: Callable[[Connection], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(run(query), loop).result()

    cp_max, seq_max = await run(_bounds)
    return await asyncio.to_thread(
        lambda: work(*_stream(fetch, upto_seq=seq_max, upto_cp=cp_max, page=page)))


async def log_size(engines: Engines) -> int:
    """The last seq of the store's log (0 when empty): the total for a progress bar."""
    async with engines.read.connect() as conn:
        return (await conn.execute(select(func.max(exchange_log.c.seq)))).scalar() or 0


async def verify_store(engines: Engines, *, public_key: KeyResolver | None,
                       progress: Callable[[int], None] | None = None, page: int = PAGE) -> VerifyReport:
    """Verify the store's log online, streaming in seq order; safe while the gateway keeps appending."""
    return await _threaded(
        engines, lambda records, cps: verify_records(records, cps, public_key=public_key, progress=progress),
        page=page)


# ---- export files ----------------------------------------------------------------------------------


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
    return await _threaded(engines, lambda records, cps: write_export(records, cps, out, progress=progress), page=page)


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


def verify_export(path: Path, *, public_key: KeyResolver | None,
                  progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify an export file offline (two streaming passes: records and checkpoints).

    Raises ExportFormatError for a line that is not an export line at all."""
    return verify_records(read_export(path, kind="log"), read_export(path, kind="checkpoint"),
                          public_key=public_key, progress=progress)
