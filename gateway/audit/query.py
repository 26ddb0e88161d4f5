"""The auditor's view of the exchange log: filtered listing, one record with its checks, and streamed exports."""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import queue
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import BaseModel, Field

from gateway.audit.chain import (
    GENESIS,
    canonical_bytes,
    chain_hash,
    checkpoint_problem,
    format_time,
    keystore_resolver,
    sha256_hex,
)
from gateway.audit.export import iter_event_lines
from gateway.audit.log import ExchangeLog
from gateway.audit.export import export_chain
from gateway.canonical.errors import GatewayError, NotFound
from gateway.canonical.iin import mask_iin
from gateway.mapping import Mappings
from gateway.wire import Clock
from gateway.storage import audit_queries
from gateway.storage.audit_queries import METADATA_COLUMNS, LogFilter
from gateway.storage.db import Engines
from gateway.storage.hops import action_row
from gateway.storage.store import Store
from security.access import Principal
from security.keys import KeyStore

MAX_LIMIT = 500
MAX_REASON = 500
ExportFormat = Literal["events", "csv", "chain"]
# List items and the CSV export carry METADATA_COLUMNS: no raw bytes, no iin_hash.
CSV_COLUMNS = METADATA_COLUMNS[:13] + ("request_kept", "response_kept") + METADATA_COLUMNS[13:]
EXPORTS = {  # format -> (media type, file name)
    "events": ("application/x-ndjson", "events.jsonl"),
    "csv": ("text/csv; charset=utf-8", "exchange-log.csv"),
    "chain": ("application/x-ndjson", "exchange-log.jsonl"),
}
_IIN_LIKE = re.compile(r"(?<!\d)\d{12}(?!\d)")
IIN_LIKE = re.compile(r"\d{12}")  # a whole value that is an IIN's shape
_CURSOR_PREFIX = "seq:"


class InvalidAuditQuery(GatewayError):
    slug = "invalid-audit-query"
    status = 422
    title = "The audit query is not valid"


class ReasonRequired(GatewayError):
    slug = "reason-required"
    status = 422
    title = "Reading personal data needs a reason"


# ---- response bodies ------------------------------------------------------------------------------


class ExchangeItem(BaseModel):
    """One exchange-log record without its raw bytes or any personal data."""

    seq: int
    at: datetime
    kind: str
    message_id: str | None
    delivery_id: int | None
    case_id: str | None
    peer: str | None
    client: str | None = Field(description="the verified identity of the caller, null when none was verified")
    signer: str | None = Field(description="the key id or certificate fingerprint whose signature was verified")
    status_code: int | None
    result: str | None
    request_hash: str | None = Field(description="SHA-256 of the request as stored (sealed), or of the clear "
                                                 "bytes when only the digest is kept")
    response_hash: str | None
    request_kept: bool = Field(description="the raw request is stored (sealed) and readable in the detail view")
    response_kept: bool
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str


class ExchangePage(BaseModel):
    items: list[ExchangeItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class RawMessage(BaseModel):
    """A raw wire message as exchanged: clear text when it is UTF-8, base64 otherwise."""

    kept: bool = Field(description="false: the counterpart is metadata-only, or nothing was exchanged")
    encoding: Literal["utf-8", "base64"] | None = None
    content: str | None = None
    size: int | None = Field(None, description="clear bytes")
    stored_hash: str | None = None
    hash_matches: bool | None = Field(None, description="the stored hash is the SHA-256 of the stored (sealed) "
                                                        "bytes; null when only the digest was kept")
    error: str | None = Field(None, description="why the sealed bytes could not be opened")


class ChainCheck(BaseModel):
    prev_hash: str
    hash: str
    hash_matches: bool = Field(description="the stored hash is SHA-256(prev_hash || canonical record)")
    linked: bool = Field(description="prev_hash is the hash of the record before (the genesis hash for seq 1)")


class SignatureCheck(BaseModel):
    """The signature verified when the message was exchanged: the caller's or callback's on what was received,
    the counterpart's on its response for an attempt."""

    verified: bool
    signer: str | None


class CheckpointRef(BaseModel):
    """The first signed checkpoint covering the record."""

    id: int
    size: int
    head_hash: str
    created_at: datetime
    kid: str
    alg: str
    signature_valid: bool | None = Field(description="checked against the gateway's keys; null when this "
                                                     "process holds no key store")


class ExchangeDetail(BaseModel):
    record: ExchangeItem
    iin_hash: str | None = Field(description="the keyed hash of the person's IIN, when the record names one")
    request: RawMessage
    response: RawMessage
    chain: ChainCheck
    signature: SignatureCheck
    checkpoint: CheckpointRef | None


# ---- cursors and filters --------------------------------------------------------------------------


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidAuditQuery("`cursor` is not a cursor this API returned") from None
    if not text.startswith(_CURSOR_PREFIX) or not text[len(_CURSOR_PREFIX):].isdigit():
        raise InvalidAuditQuery("`cursor` is not a cursor this API returned")
    return int(text[len(_CURSOR_PREFIX):])


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidAuditQuery(f"`{name}` needs an explicit offset (e.g. 2026-03-02T09:15:00+05:00)")
    return value


def _clean_reason(reason: str | None, *, required: bool) -> str | None:
    reason = (reason or "").strip()
    if not reason:
        if required:
            raise ReasonRequired("give a `reason` for reading personal data; the read is logged with it")
        return None
    if len(reason) > MAX_REASON:
        raise InvalidAuditQuery(f"`reason` is longer than {MAX_REASON} characters")
    # The reason is free text kept in the log and its exports: an IIN typed into it must not stay clear there.
    return _IIN_LIKE.sub(lambda m: mask_iin(m.group(0)), reason)


def _item(values: dict[str, Any]) -> ExchangeItem:
    """A list item from a metadata row, or from a full record (its raw columns become the `kept` flags)."""
    fields = {name: values[name] for name in METADATA_COLUMNS}
    fields["detail"] = orjson.loads(values["detail"]) if values["detail"] else None
    for name in ("request", "response"):
        kept = values[f"{name}_kept"] if f"{name}_kept" in values else values[f"{name}_raw"] is not None
        fields[f"{name}_kept"] = bool(kept)  # SQLite answers IS NOT NULL with 0/1
    return ExchangeItem(**fields)


@dataclass(frozen=True, kw_only=True)
class ExportScope:
    """What an export covers: one case, a period (events: by received time; csv: by record time), or all."""

    case_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        _aware(self.since, "since")
        _aware(self.until, "until")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidAuditQuery("`since` is after `until`")

    @property
    def whole(self) -> bool:
        return self.case_id is None and self.since is None and self.until is None

    def logged(self) -> dict[str, str]:
        return {k: (format_time(v) if isinstance(v, datetime) else v)
                for k, v in (("case_id", self.case_id), ("since", self.since), ("until", self.until))
                if v is not None}


# ---- the exchange log rows of auditor actions ------------------------------------------------------


@dataclass(kw_only=True)
class ExchangeQueries:
    """Reads for auditors over the store's read engine; every read of personal data is logged first-hand."""

    store: Store
    exchange_log: ExchangeLog
    mappings: Mappings
    clock: Clock
    keys: KeyStore | None = None

    @property
    def engines(self) -> Engines:
        return self.store.engines

    async def _log_action(self, *, kind: str, principal: Principal, what: dict[str, Any],
                          case_id: str | None = None, iin_hash: str | None = None) -> None:
        now = self.clock()
        # `error` is the hop's free-text field: here it says what was read and why
        await self.store.record_hop(action_row(
            hop=kind, peer=principal.client_id, at=now, result="served",
            error=orjson.dumps(what, option=orjson.OPT_SORT_KEYS).decode(), client=principal.client_id,
            signer=principal.keyid, case_id=case_id, iin_hash=iin_hash))

    def _peers(self, peer: str) -> tuple[frozenset[str], frozenset[str]]:
        """(peer values, verified client ids) meaning `peer`: an instance, or every instance of a counterpart."""
        names = {peer} | {i.name for i in self.mappings.counterparts.instances if i.counterpart == peer}
        return frozenset(names), frozenset(f"counterpart:{name}" for name in names)

    async def list_exchanges(self, *, principal: Principal, case_id: str | None = None, iin: str | None = None,
                             peer: str | None = None, kind: str | None = None, result: str | None = None,
                             status_code: int | None = None, since: datetime | None = None,
                             until: datetime | None = None, cursor: str | None = None, limit: int = 100,
                             reason: str | None = None, newest_first: bool = False) -> ExchangePage:
        """Records in seq order after `cursor` (newest first: before it), narrowed by every filter given
        (`since` <= at < `until`).

        `iin` finds the records naming the person (by keyed hash) and every record of their cases; the
        search is logged as an `audit-search` record holding the hash, never the IIN."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidAuditQuery(f"`limit` must be between 1 and {MAX_LIMIT}")
        cursor_seq = decode_cursor(cursor) if cursor else None
        iin_hash = None
        if iin is not None:
            if len(iin) != 12 or not iin.isascii() or not iin.isdigit():
                raise InvalidAuditQuery("`iin` must be 12 digits")  # the value is not echoed back
            iin_hash = self.exchange_log.cipher.hash(iin)
        names, clients = self._peers(peer) if peer is not None else (None, None)
        where = LogFilter(case_id=case_id, iin_hash=iin_hash, peers=names, clients=clients, kind=kind,
                           result=result, status_code=status_code, since=_aware(since, "since"),
                           until=_aware(until, "until"))
        clean_reason = _clean_reason(reason, required=False)
        # One row more than the page: whether there is a next page is known without counting.
        rows = await audit_queries.exchange_page(self.engines, filter=where, cursor_seq=cursor_seq,
                                                 newest_first=newest_first, count=limit + 1)
        items = [_item(row) for row in rows[:limit]]
        if iin_hash is not None:
            filters = {k: v for k, v in (("case_id", case_id), ("peer", peer), ("kind", kind), ("result", result),
                                         ("status_code", status_code), ("cursor", cursor)) if v is not None}
            filters.update({k: format_time(v) for k, v in (("since", since), ("until", until)) if v is not None})
            await self._log_action(kind="audit-search", principal=principal, iin_hash=iin_hash,
                                   what={"search": "iin", "filters": filters, "found": len(items),
                                         "reason": clean_reason})
        return ExchangePage(items=items, next_cursor=encode_cursor(items[-1].seq) if len(rows) > limit else None)

    async def exchange_detail(self, *, seq: int, principal: Principal, reason: str | None) -> ExchangeDetail:
        """A record with its clear wire bytes and its checks; logged as `audit-read` before it is returned."""
        clean_reason = _clean_reason(reason, required=True)
        stored = await audit_queries.exchange_record(self.engines, seq=seq)
        if stored is None:
            raise NotFound(f"no exchange-log record {seq}")
        record = stored.record
        before = GENESIS if seq == 1 else stored.previous_hash
        detail = ExchangeDetail(
            record=_item(record), iin_hash=record["iin_hash"],
            request=self._raw(record["request_raw"], record["request_hash"]),
            response=self._raw(record["response_raw"], record["response_hash"]),
            chain=ChainCheck(prev_hash=record["prev_hash"], hash=record["hash"],
                             hash_matches=chain_hash(record["prev_hash"], canonical_bytes(record)) == record["hash"],
                             linked=before == record["prev_hash"]),
            signature=SignatureCheck(verified=record["signer"] is not None, signer=record["signer"]),
            checkpoint=None if stored.checkpoint is None else self._checkpoint(stored.checkpoint),
        )
        await self._log_action(kind="audit-read", principal=principal, case_id=record["case_id"],
                               iin_hash=record["iin_hash"], what={"read_seq": seq, "reason": clean_reason})
        return detail

    async def record_export(self, *, principal: Principal, format: ExportFormat, reason: str | None,
                            scope: ExportScope = ExportScope(), reason_required: bool = False) -> None:
        """An export leaves the gateway with the log's metadata (events: names too): who took it, what it
        covers and why are logged before the first byte is sent."""
        what: dict[str, Any] = {"export": format, "reason": _clean_reason(reason, required=reason_required)}
        if not scope.whole:
            what["scope"] = scope.logged()
        await self._log_action(kind="audit-export", principal=principal, case_id=scope.case_id, what=what)

    async def checkpoints(self, *, limit: int = 50) -> list[CheckpointRef]:
        """The newest signed checkpoints, each with its signature checked against the gateway's keys."""
        return [self._checkpoint(cp) for cp in await audit_queries.latest_checkpoints(self.engines, limit=limit)]

    def _raw(self, stored: bytes | None, stored_hash: str | None) -> RawMessage:
        if stored is None:
            return RawMessage(kept=False, stored_hash=stored_hash)
        matches = sha256_hex(stored) == stored_hash
        try:
            clear = self.exchange_log.open_raw(stored)
        except (ValueError, binascii.Error) as exc:  # PiiError is a ValueError: key gone, or not authentic
            return RawMessage(kept=True, stored_hash=stored_hash, hash_matches=matches,
                              error=f"{type(exc).__name__}: {exc}")
        assert clear is not None
        try:
            content, encoding = clear.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(clear).decode("ascii"), "base64"
        return RawMessage(kept=True, encoding=encoding, content=content, size=len(clear), stored_hash=stored_hash,
                          hash_matches=matches)

    def _checkpoint(self, cp: dict[str, Any]) -> CheckpointRef:
        valid = None
        if self.keys is not None:
            key = keystore_resolver(self.keys)(cp["kid"])
            valid = key is not None and checkpoint_problem(key, cp) is None
        return CheckpointRef(id=cp["id"], size=cp["size"], head_hash=cp["head_hash"], created_at=cp["created_at"],
                             kid=cp["kid"], alg=cp["alg"], signature_valid=valid)


# ---- exports ---------------------------------------------------------------------------------------


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # Error texts can quote a counterpart's answer: a spreadsheet must not run it as a formula (OWASP).
        return "'" + value
    return "" if value is None else value


async def _csv_pages(engines: Engines, *, page: int, scope: ExportScope | None = None
                     ) -> AsyncIterator[tuple[bytes, int]]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode("utf-8"), 0
    after = 0
    scope = scope or ExportScope()
    while True:
        rows = await audit_queries.metadata_after(engines, after=after, count=page, case_id=scope.case_id,
                                                  since=scope.since, until=scope.until)
        if not rows:
            return
        buffer.seek(0)
        buffer.truncate()
        for values in rows:
            values["request_kept"] = bool(values["request_kept"])
            values["response_kept"] = bool(values["response_kept"])
            writer.writerow([_csv_value(values[name]) for name in CSV_COLUMNS])
        yield buffer.getvalue().encode("utf-8"), len(rows)
        after = rows[-1]["seq"]


async def iter_csv(*, engines: Engines, page: int = 2_000, scope: ExportScope | None = None
                   ) -> AsyncIterator[bytes]:
    """The exchange log's metadata as CSV (RFC 4180, header first), in seq order: no raw bytes, no IIN or hash."""
    async for chunk, _ in _csv_pages(engines, page=page, scope=scope):
        yield chunk


async def write_csv(*, engines: Engines, out: BinaryIO, page: int = 2_000) -> int:
    """`iter_csv` into a file; returns the record count."""
    count = 0
    async for chunk, n in _csv_pages(engines, page=page):
        out.write(chunk)
        count += n
    return count


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _ChunkPipe:
    """A file `export_chain` writes to from its thread, read as chunks by the event loop; bounded, so a slow
    client slows the export down instead of filling memory, and a client gone stops it."""

    def __init__(self, *, chunk: int = 64 * 1024, depth: int = 8) -> None:
        self._chunk = chunk
        self._buffer = bytearray()
        self._queue: queue.Queue[bytes | _End] = queue.Queue(depth)
        self.abandoned = threading.Event()

    def _put(self, item: bytes | _End) -> None:
        while True:
            if self.abandoned.is_set():
                raise BrokenPipeError("the reader of the export went away")
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= self._chunk:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def finish(self, error: BaseException | None) -> None:
        if self._buffer and error is None:
            self._put(bytes(self._buffer))
        self._put(_End(error))

    def _get(self) -> bytes | _End | None:
        try:
            return self._queue.get(timeout=0.5)
        except queue.Empty:
            return None

    async def chunks(self, produce: Callable[[BinaryIO], Any]) -> AsyncIterator[bytes]:
        async def run() -> None:
            error: BaseException | None = None
            try:
                await produce(self)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001  (handed to the reader, which raises it)
                error = exc
            try:
                await asyncio.to_thread(self.finish, error)
            except BrokenPipeError:
                pass

        task = asyncio.create_task(run(), name="audit-export-chain")
        try:
            while True:
                item = await asyncio.to_thread(self._get)
                if item is None:
                    continue
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            self.abandoned.set()
            await asyncio.gather(task, return_exceptions=True)


def export_stream(*, format: ExportFormat, store: Store, scope: ExportScope = ExportScope()) -> AsyncIterator[bytes]:
    """The bytes of an export as `gateway audit export --format` writes them, produced while they are sent."""
    if format == "events":
        return iter_event_lines(store=store, until=scope.until, since=scope.since, case_id=scope.case_id)
    if format == "csv":
        return iter_csv(engines=store.engines, scope=scope)
    if not scope.whole:
        # A chain verifies from its first record to its head: a slice of it proves nothing on its own.
        raise InvalidAuditQuery("the chain export is always the whole log (a part of a hash chain cannot be "
                                "verified alone); choose events or csv for a case or a period")
    return _ChunkPipe().chunks(lambda out: export_chain(engines=store.engines, out=out))
