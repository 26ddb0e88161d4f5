"""OutboundExchange: encode, sign once, send, verify, decode, classify; every fault comes back as the hop's."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import orjson
import pytest

from gateway.canonical.errors import WireDecodeError
from gateway.mapping import Instance
from gateway.pipeline.exchange import OutboundExchange
from gateway.wire import ReadTimeout, WireRequest, WireResponse
from tests.fakes import SIGNATURE_HEADER, FakeClock, FakeSigner, FakeTransport, FakeVerifier
from tests.unit.builders import instance

INST = instance("mio-kz-35")
REQUEST = WireRequest("POST", "/referrals", (("content-type", "application/json"),), b'{"referral":"REF-1"}')
ANSWER = WireResponse(200, (("content-type", "application/json"),), b'{"accepted":true}')


class Parts:
    def __init__(self, *answers: object, verifier: FakeVerifier | None = None, signer: FakeSigner | None = None,
                 inst: Instance = INST) -> None:
        self.clock = FakeClock()
        self.transport = FakeTransport({inst.name: answers})
        self.signer = signer or FakeSigner()
        self.verifier = verifier or FakeVerifier()
        self.exchange = OutboundExchange(transport=self.transport, clock=self.clock, signer=self.signer,
                                         verifier=self.verifier)
        self.decoded: list[tuple[WireResponse, datetime]] = []
        self.inst = inst

    def decode(self, response: WireResponse, received_at: datetime) -> dict:
        self.decoded.append((response, received_at))
        return orjson.loads(response.body)

    async def call(self, encode=lambda: REQUEST):  # noqa: ANN001, ANN201
        return await self.exchange.call(self.inst, encode=encode, decode=self.decode)


async def test_it_signs_exactly_once_and_sends_what_it_signed() -> None:
    parts = Parts(ANSWER)
    hop = await parts.call()
    assert parts.signer.calls == 1
    (sent,) = parts.transport.sent
    assert sent.request.header(SIGNATURE_HEADER) == "mio-kz-35/1"
    assert hop.request == sent.request
    assert parts.verifier.checked == [("mio-kz-35", sent.request, ANSWER)]


async def test_a_2xx_answer_is_verified_and_decoded() -> None:
    parts = Parts()

    def slow(request: WireRequest) -> WireResponse:
        parts.clock.advance(2)
        return ANSWER

    parts.transport.script(INST.name, slow)
    sent_at = parts.clock()
    hop = await parts.call()
    assert hop.failure is None
    assert hop.result == {"accepted": True}
    assert (hop.status, hop.answered, hop.signer) == (200, True, "fake-key")
    assert hop.sent_at == sent_at
    assert hop.answered_at == sent_at + timedelta(seconds=2)
    assert parts.decoded == [(ANSWER, hop.answered_at)]


async def test_a_transport_failure_is_classified_and_retryable() -> None:
    parts = Parts(ReadTimeout("no answer within 10 s"))
    hop = await parts.call()
    assert hop.failure is not None
    assert hop.failure.retryable
    assert hop.failure.reason == "read timeout: no answer within 10 s"
    assert hop.request is not None and hop.response is None and not hop.answered
    assert hop.sent_at == parts.clock()
    assert parts.verifier.checked == [] and parts.decoded == []


async def test_a_503_with_retry_after_carries_it() -> None:
    parts = Parts(WireResponse(503, (("Retry-After", "17"),), b"busy"))
    hop = await parts.call()
    assert hop.failure is not None
    assert (hop.failure.retryable, hop.failure.status, hop.failure.retry_after) == (True, 503, 17.0)
    assert hop.failure.reason == "counterpart answered 503"
    assert hop.status == 503
    assert parts.verifier.checked == [] and parts.decoded == []


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_a_4xx_answer_is_final(status: int) -> None:
    parts = Parts(WireResponse(status, body=b'{"error":"no"}'))
    hop = await parts.call()
    assert hop.failure is not None
    assert (hop.failure.retryable, hop.failure.status) == (False, status)
    assert parts.decoded == []


async def test_a_refused_signature_is_final_with_its_reason() -> None:
    parts = Parts(ANSWER, verifier=FakeVerifier(refuse=("unknown-key", "no key pinned for mio-kz-35")))
    hop = await parts.call()
    assert hop.failure is not None
    assert not hop.failure.retryable
    assert hop.failure.reason == "response signature refused (unknown-key): no key pinned for mio-kz-35"
    assert hop.response == ANSWER and hop.result is None and hop.signer is None
    assert parts.decoded == []


async def test_an_undecodable_answer_is_final() -> None:
    parts = Parts(WireResponse(200, body=b"<html>maintenance</html>"))

    def decode(response: WireResponse, received_at: datetime) -> dict:
        raise WireDecodeError("the answer is not JSON")

    hop = await parts.exchange.call(INST, encode=lambda: REQUEST, decode=decode)
    assert hop.failure is not None
    assert not hop.failure.retryable
    assert hop.failure.reason == "undecodable reply from mio-kz-35: the answer is not JSON"
    assert hop.signer == "fake-key"  # it verified; only the decode failed


async def test_an_encode_error_sends_nothing() -> None:
    parts = Parts(ANSWER)

    def encode() -> WireRequest:
        raise ValueError("no code for kind shelter.placement")

    hop = await parts.call(encode)
    assert hop.failure is not None
    assert not hop.failure.retryable
    assert hop.failure.reason == "cannot encode for mio: no code for kind shelter.placement"
    assert hop.request is None and hop.sent_at is None
    assert parts.signer.calls == 0 and parts.transport.sent == []


async def test_a_signer_error_sends_nothing() -> None:
    parts = Parts(ANSWER, signer=FakeSigner(error=RuntimeError("no active key")))
    hop = await parts.call()
    assert hop.failure is not None
    assert not hop.failure.retryable
    assert hop.failure.reason == "cannot sign for mio-kz-35: RuntimeError: no active key"
    assert hop.request is None
    assert parts.transport.sent == []


async def test_a_metadata_only_instance_logs_hashes_of_the_bytes() -> None:
    parts = Parts(ANSWER, inst=instance("mio-kz-35", log_bodies=False))
    hop = await parts.call()
    assert hop.request is not None
    assert hop.wire_for_log() == {"request_hash": hashlib.sha256(hop.request.body).hexdigest(),
                                  "response_hash": hashlib.sha256(ANSWER.body).hexdigest()}


async def test_an_instance_that_logs_bodies_keeps_the_bytes() -> None:
    parts = Parts(ReadTimeout("slow"))
    hop = await parts.call()
    assert hop.wire_for_log() == {"request_raw": REQUEST.body, "response_raw": None}
