"""The one road to a counterpart: encode, sign once, send, verify the answer, decode, classify."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Generic, Protocol, TypeVar

from pydantic import ValidationError

from gateway.canonical.errors import GatewayError, WireDecodeError
from gateway.mapping import Instance
from gateway.pipeline.ports import Signer
from gateway.pipeline.verify import CounterpartSignatureError
from gateway.pipeline.retry import DeliveryFailure, classify_status, classify_transport_error, parse_retry_after
from gateway.wire import Clock, TransportFailure, WireRequest, WireResponse

T = TypeVar("T")

# What an encode or decode may raise on bad data: a failure of this exchange, never of the gateway.
CODEC_ERRORS = (GatewayError, WireDecodeError, ValidationError, ValueError, KeyError)


class SendPort(Protocol):
    async def send(self, instance: Instance, request: WireRequest) -> WireResponse: ...


class Verified(Protocol):
    keyid: str | None


class ResponseVerifier(Protocol):
    """Checks a counterpart's signed answer (CounterpartVerifier); returns what may be decoded and who signed it,
    or raises CounterpartSignatureError."""

    async def verify_response(self, inst: Instance, *, request: WireRequest, response: WireResponse
                              ) -> tuple[WireResponse, Verified]: ...


@dataclass(frozen=True, slots=True)
class Hop(Generic[T]):
    """One exchange with a counterpart, as it went: what was sent and answered, when, and how it ended."""

    instance: Instance
    request: WireRequest | None = None  # as signed and sent; None when encoding or signing failed
    response: WireResponse | None = None  # the answer as received (before verification unwrapped it)
    sent_at: datetime | None = None
    answered_at: datetime | None = None
    signer: str | None = None  # the pinned key that verified the answer
    result: T | None = None  # what the decode made of a verified 2xx answer
    failure: DeliveryFailure | None = None

    @property
    def status(self) -> int | None:
        return self.response.status if self.response is not None else None

    @property
    def answered(self) -> bool:
        """The counterpart gave an HTTP answer (whatever it was)."""
        return self.response is not None

    def wire_for_log(self) -> dict[str, object]:
        """What the exchange log keeps: the bytes, or only their hashes for a metadata-only instance."""
        request = self.request.body if self.request is not None else None
        response = self.response.body if self.response is not None else None
        if not self.instance.log_bodies:
            return {"request_hash": digest(request) if request is not None else None,
                    "response_hash": digest(response) if response is not None else None}
        return {"request_raw": request, "response_raw": response}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OutboundExchange:
    """Deliveries, document lookups and everything else the gateway sends go through `call`."""

    def __init__(self, *, transport: SendPort, clock: Clock, signer: Signer | None = None,
                 verifier: ResponseVerifier | None = None) -> None:
        self.transport = transport
        self.clock = clock
        self.signer = signer
        self.verifier = verifier

    async def call(self, instance: Instance, *, encode: Callable[[], WireRequest],
                   decode: Callable[[WireResponse, datetime], T]) -> Hop[T]:
        """Never raises for the counterpart's or the data's faults: they come back as the hop's failure."""
        try:
            wire = encode()
        except CODEC_ERRORS as exc:
            return Hop(instance, failure=DeliveryFailure(f"cannot encode for {instance.counterpart}: {exc}",
                                                         retryable=False))
        if self.signer is not None:
            try:
                wire = self.signer.sign(wire, instance=instance)
            except Exception as exc:  # noqa: BLE001
                return Hop(instance, failure=DeliveryFailure(
                    f"cannot sign for {instance.name}: {type(exc).__name__}: {exc}", retryable=False))
        sent_at = self.clock()
        try:
            response = await self.transport.send(instance, wire)
        except TransportFailure as exc:
            return Hop(instance, wire, sent_at=sent_at, answered_at=self.clock(),
                       failure=classify_transport_error(exc))
        answered_at = self.clock()
        if not 200 <= response.status < 300:
            retry_after = parse_retry_after(response.header("retry-after"), now=answered_at)
            return Hop(instance, wire, response, sent_at, answered_at,
                       failure=classify_status(response.status, policy=instance.retry, retry_after=retry_after))
        signer = None
        verified = response
        if self.verifier is not None:
            try:
                # Only what verifies is decoded: for an XML counterpart, only the signed part of the envelope.
                verified, identity = await self.verifier.verify_response(instance, request=wire, response=response)
                signer = identity.keyid
            except CounterpartSignatureError as exc:
                # The counterpart may have acted on the request, so a blind retry is wrong: a person decides.
                return Hop(instance, wire, response, sent_at, answered_at, failure=DeliveryFailure(
                    f"response signature refused ({exc.reason}): {exc.detail}", retryable=False))
        try:
            result = decode(verified, answered_at)
        except CODEC_ERRORS as exc:
            return Hop(instance, wire, response, sent_at, answered_at, signer, failure=DeliveryFailure(
                f"undecodable reply from {instance.name}: {exc}", retryable=False))
        return Hop(instance, wire, response, sent_at, answered_at, signer, result)
