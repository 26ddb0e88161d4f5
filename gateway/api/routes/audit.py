"""`/v1/audit`: the exchange log for auditors; reading personal data needs a reason and is itself logged."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from gateway.api import problems
from gateway.api.auth import require
from gateway.api.deps import ContainerDep
from gateway.api.schemas import MAX_INT64
from gateway.audit.query import (
    EXPORTS,
    MAX_LIMIT,
    ExchangeDetail,
    ExchangePage,
    ExchangeQueries,
    ExportScope,
    InvalidAuditQuery,
    decode_cursor,
    export_stream,
)
from gateway.bootstrap import Container
from gateway.canonical.messages import TEXT, TIMESTAMP_RULE, Id, Timestamp, check_text
from security.access import Principal

router = APIRouter(prefix="/v1/audit", tags=["audit"])
# Auditors only: an admin configures the gateway but reads no personal data through this API.
Auditor = Annotated[Principal, require("auditor")]
# A reason is free text kept in the log: no control character (a blank one is `reason-required` where needed).
ReasonText = Annotated[str, AfterValidator(lambda v: check_text(v) if v.strip() else v),
                       Field(json_schema_extra={"pattern": TEXT})]
Reason = Annotated[ReasonText | None, Query(description="why the auditor reads this (kept in the log)")]
RequiredReason = Annotated[ReasonText | None, Query(description="required: why the auditor reads this record's "
                                                              "personal data (kept in the log with the read); "
                                                              "missing or blank: `reason-required`")]
Since = Annotated[Timestamp | None, Query(description="records at or after: " + TIMESTAMP_RULE)]
Until = Annotated[Timestamp | None, Query(description="records before: " + TIMESTAMP_RULE)]
INVALID = problems.responses("invalid-audit-query")


def _bounded(cursor: str | None) -> str | None:
    """A cursor names a seq, and a seq is 64-bit: one past that is not a cursor this API returned (never a 500)."""
    if cursor and decode_cursor(cursor) > MAX_INT64:
        raise InvalidAuditQuery("`cursor` is not a cursor this API returned")
    return cursor


def _queries(c: Container) -> ExchangeQueries:
    return ExchangeQueries(store=c.store, exchange_log=c.exchange_log, mappings=c.mappings, clock=c.clock,
                           keys=c.keys)


@router.get("/exchanges", response_model=ExchangePage, responses=INVALID)
async def list_exchanges(
    c: ContainerDep,
    caller: Auditor,
    case_id: Id | None = None,
    iin: Annotated[str | None, Query(pattern=r"^[0-9]{12}$",
                                     description="the person's IIN: searched by its keyed hash, never stored; "
                                                 "finds the records naming the person and those of their "
                                                 "cases; the search is logged")] = None,
    peer: Annotated[Id | None, Query(description="a counterpart instance (mio-kz-35) or a counterpart (mio): "
                                                  "the records exchanged with it")] = None,
    kind: Annotated[Id | None, Query(description="received, reply, derived, attempt, refused, read, lookup, "
                                                  "document, audit-read, audit-search, audit-export...")] = None,
    result: Annotated[Id | None, Query(description="accepted, delivered, retry, dead, refused, served...")] = None,
    status_code: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: Since = None,
    until: Until = None,
    cursor: Annotated[Id | None, Query(description="the `next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    reason: Reason = None,
    newest_first: Annotated[bool, Query(description="descending seq order; `cursor` then pages back in time")] = False,
) -> ExchangePage:
    """Exchange-log records in seq order: metadata only, no raw bytes and no personal data; `since` before
    `until` (otherwise the page is empty); a `cursor` is only one this API returned (`invalid-audit-query`)."""
    return await _queries(c).list_exchanges(principal=caller, case_id=case_id, iin=iin, peer=peer, kind=kind,
                                            result=result, status_code=status_code, since=since, until=until,
                                            cursor=_bounded(cursor), limit=limit, reason=reason,
                                            newest_first=newest_first)


class ExchangeSearch(BaseModel):
    """The filters of `GET /v1/audit/exchanges` in a body, so an IIN never appears in a URL or an access log."""

    model_config = ConfigDict(extra="forbid")

    case_id: Id | None = None
    iin: str | None = Field(None, pattern=r"^[0-9]{12}$",
                            description="12 digits, searched by its keyed hash, never stored; the search is logged")
    peer: Id | None = None
    kind: Id | None = None
    result: Id | None = None
    status_code: StrictInt | None = Field(None, ge=100, le=599)
    since: Timestamp | None = Field(None, description="records at or after: " + TIMESTAMP_RULE)
    until: Timestamp | None = Field(None, description="records before: " + TIMESTAMP_RULE)
    cursor: Id | None = Field(None, description="the `next_cursor` of the previous page")
    limit: StrictInt = Field(100, ge=1, le=MAX_LIMIT)
    reason: ReasonText | None = Field(None, description="why the auditor searches (kept in the log)")
    newest_first: StrictBool = Field(False, description="descending seq order; `cursor` then pages back in time")


@router.post("/exchanges/search", response_model=ExchangePage, responses=INVALID)
async def search_exchanges(search: ExchangeSearch, c: ContainerDep, caller: Auditor) -> ExchangePage:
    """The same search as `GET /v1/audit/exchanges`, with the filters in the body (use it for an IIN)."""
    return await _queries(c).list_exchanges(principal=caller, **{**search.model_dump(),
                                                                 "cursor": _bounded(search.cursor)})


@router.get("/exchanges/{seq:int}", response_model=ExchangeDetail,
            responses=problems.responses("not-found", "reason-required", "invalid-audit-query"),
            openapi_extra={"x-required-query": ["reason"]})
async def exchange_detail(seq: Annotated[int, Path(ge=1, le=MAX_INT64, description="the record's `seq`")],
                          c: ContainerDep, caller: Auditor, reason: RequiredReason = None) -> ExchangeDetail:
    """One record with its clear wire bytes, hash, chain-link and signature checks and covering checkpoint.

    `reason` is required: the read is appended to the exchange log (`audit-read`) before the answer is sent."""
    return await _queries(c).exchange_detail(seq=seq, principal=caller, reason=reason)


@router.get("/export", response_class=StreamingResponse, responses={
    200: {"description": "events: canonical messages with received_at, IIN masked (JSON lines); csv: the "
                         "exchange log's metadata columns; chain: the log with hashes and checkpoints, for "
                         "`gateway audit verify --file` (JSON lines)",
          "content": {"application/x-ndjson": {}, "text/csv": {}}},
    **INVALID})
async def export(
    c: ContainerDep,
    caller: Auditor,
    format: Literal["events", "csv", "chain"] = "events",
    case_id: Annotated[Id | None, Query(description="events and csv: only this case's messages or records")] = None,
    since: Annotated[Timestamp | None, Query(description="events: messages received at or after this time; csv: "
                                                         "records written at or after it. " + TIMESTAMP_RULE)] = None,
    until: Annotated[Timestamp | None, Query(description="events: messages received up to this time; csv: "
                                                         "records written up to it. " + TIMESTAMP_RULE)] = None,
    reason: Reason = None,
) -> StreamingResponse:
    """The export `gateway audit export --format` writes, streamed; who took it, its scope and the reason are
    logged (`audit-export`). The chain is always the whole log: a scope with `format=chain` is refused."""
    scope = ExportScope(case_id=case_id, since=since, until=until)
    body = export_stream(format=format, store=c.store, scope=scope)
    await _queries(c).record_export(principal=caller, format=format, reason=reason, scope=scope)
    media_type, filename = EXPORTS[format]
    return StreamingResponse(body, media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
