"""Ports of the pipeline: the adapter protocol and its contexts, the signer, the store, and the id seam."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Collection, Literal, Protocol

from gateway.wire import WireRequest, WireResponse

if TYPE_CHECKING:
    from gateway.canonical.messages import AnyMessage, CaseRegistered
    from gateway.mapping import Instance, Mappings


@dataclass(frozen=True, slots=True)
class EncodeContext:
    """What a pure encode may need beyond the message, looked up and injected by the pipeline."""

    now: datetime
    case: CaseRegistered | None = None  # the case's registration (person, region), when it is known


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What a pure decode may need from outside: the gateway's clock reading, injected."""

    received_at: datetime
    extra: dict[str, str] = field(default_factory=dict)


RecordKind = str  # identity_document_status | registration_status | osms_status | phc_attachment | employment_status


@dataclass(frozen=True, slots=True)
class RecordLookup:
    """A read-only request for a record about a person (the document-request flow)."""

    request_id: str  # UUID chosen by the gateway; the counterpart drops repeats by it
    record_kind: RecordKind
    iin: str
    purpose: str


@dataclass(frozen=True, slots=True)
class RecordResult:
    """A counterpart's answer to a lookup, normalised; `found` is False when it has no such record."""

    record_kind: RecordKind
    found: bool
    data: dict[str, object]
    as_of: datetime


# How a counterpart's messages are signed, both ways: RFC 9421 headers, or an XML signature inside the body.
SignatureChannel = Literal["http", "xml"]


class Adapter(Protocol):
    """Translates canonical messages to one counterpart's wire format and back, without I/O."""

    counterpart: str
    signature_channel: SignatureChannel  # the adapter knows its wire format, so it says which signature it takes

    def encode(
        self, message: AnyMessage, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest: ...

    def decode_response(
        self, response: WireResponse, *, mappings: Mappings, request: AnyMessage, context: DecodeContext
    ) -> list[AnyMessage]: ...

    def decode_callback(
        self, request: WireRequest, *, mappings: Mappings, context: DecodeContext
    ) -> list[AnyMessage]: ...


class LookupAdapter(Adapter, Protocol):
    """An adapter whose counterpart also answers record lookups (the document-request flow)."""

    def encode_lookup(
        self, lookup: RecordLookup, *, mappings: Mappings, instance: Instance, context: EncodeContext
    ) -> WireRequest: ...

    def decode_lookup(
        self, response: WireResponse, *, mappings: Mappings, lookup: RecordLookup, context: DecodeContext
    ) -> RecordResult: ...


class Signer(Protocol):
    """Signs a wire request once, in the pipeline, as the instance's channel requires."""

    def sign(self, request: WireRequest, *, instance: Instance) -> WireRequest: ...


# Replies derived from a request get ids derived from the request's id, so a retried exchange
# yields the same reply id and the store drops the duplicate.
REPLY_NAMESPACE = uuid.UUID("6f1d7c1e-3b7a-4c53-9a55-2f0c7f6f2b10")


def derived_message_id(source_id: uuid.UUID | str, suffix: str) -> uuid.UUID:
    return uuid.uuid5(REPLY_NAMESPACE, f"{source_id}/{suffix}")


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    message_id: str
    counterpart: str
    instance: str
    attempts: int  # including the one now claimed
    first_attempt_at: datetime | None
    content: bytes
    case_content: bytes | None = None  # the case's case.registered, for adapters that need the person
    attempt_base: int = 0  # attempts before the last replay: the retry policy counts the ones after it

    @property
    def attempts_since_replay(self) -> int:
        return self.attempts - self.attempt_base


# --- the store, as the pipeline sees it --------------------------------------------------------------------------

Tx = Any  # an open write transaction of the store, opaque above gateway/storage (there: storage.batch.Transaction)
# A write job: takes every item of its kind in the group commit, returns one result (or exception) per item.
Handler = Callable[[Tx, list[Any]], list[Any]]


class WriteQueue(Protocol):
    """Group commit: a caller resumes once the transaction holding its item has committed."""

    async def submit(self, handler: Handler, item: Any) -> Any: ...


class AcceptStore(Protocol):
    """What accepting a message writes and reads, inside the accepting transaction."""

    committer: WriteQueue

    def insert_messages(self, tx: Tx, rows: list[dict[str, Any]]) -> set[str]: ...
    def existing_messages(self, tx: Tx, message_ids: list[str]) -> dict[str, tuple[str, str]]: ...
    def upsert_cases(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...
    def case_registrations(self, tx: Tx, case_ids: set[str]) -> dict[str, tuple[str, bytes]]: ...
    def insert_referrals(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...
    def set_referral_statuses(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...
    def lock_referral_states(self, tx: Tx, referral_ids: set[str]) -> dict[str, tuple[str, str]]:
        """referral_id -> (case_id, status) of those known, locked until the transaction ends."""
    def insert_deliveries(self, tx: Tx, rows: list[dict[str, Any]]) -> list[int]: ...
    def insert_exchanges(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...
    def parked_for_cases(self, tx: Tx, case_ids: set[str]) -> list[tuple[int, str, bytes]]: ...
    def reroute(self, tx: Tx, delivery_id: int, *, instance: str | None, reason: str | None,
                now: datetime) -> None: ...
    def on_rollback(self, tx: Tx, undo: Callable[[], None]) -> None:
        """Run `undo` if this transaction does not commit (what a handler counted in memory is given back)."""


class DeliveryStore(AcceptStore, Protocol):
    """What the delivery worker claims, records and hands back."""

    def claim_in(self, tx: Tx, *, worker: str, now: datetime, limit: int, lease: timedelta,
                 only: Collection[str] = (), exclude: Collection[str] = (),
                 ids: Collection[int] = ()) -> list[ClaimedDelivery]: ...
    def claim_owners(self, tx: Tx, delivery_ids: list[int]) -> dict[int, str | None]: ...
    def finish_attempts(self, tx: Tx, rows: list[dict[str, Any]]) -> None: ...
    def release_claims(self, tx: Tx, delivery_ids: list[int], *, worker: str, now: datetime) -> None: ...
    async def next_due(self) -> datetime | None: ...
