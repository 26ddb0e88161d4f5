"""Ports of the pipeline: the adapter protocol, contexts, the signer, and the id seam."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

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
