"""Callbacks from counterparts: decoded by their adapter, then accepted through the one pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from gateway.access import Forbidden
from gateway.canonical.errors import UnknownCounterpart, WireDecodeError
from gateway.pipeline.accept import Accepted
from gateway.pipeline.ports import DecodeContext, WireRequest
from security.access import Principal

if TYPE_CHECKING:
    from gateway.bootstrap import Container


async def receive_callback(
    *, container: Container, counterpart: str, caller: Principal, method: str, path: str,
    headers: tuple[tuple[str, str], ...], body: bytes, raw: bytes | None = None,
) -> list[Accepted]:
    """`body` is what verified (for ЦОН only the signed part); `raw` the bytes as received, for the log."""
    raw = body if raw is None else raw
    adapter = container.adapters.get(counterpart)
    if adapter is None or counterpart == "probation":
        raise UnknownCounterpart(f"no counterpart {counterpart!r} sends callbacks here")
    inst = container.mappings.instance(caller.instance or "")
    if inst is None or inst.counterpart != counterpart:
        raise Forbidden(f"{caller.client_id} may not send {counterpart} callbacks")
    request = WireRequest(method, path, headers, body)
    try:
        messages = adapter.decode_callback(
            request, mappings=container.mappings.for_instance(inst), context=DecodeContext(received_at=container.clock())
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise WireDecodeError(f"the callback does not make a valid canonical message: {problems}") from exc
    return [
        await container.accepter.accept(message=m, source=counterpart, request_bytes=len(raw), raw=raw,
                                        client=caller.client_id, signer=caller.keyid)
        for m in messages
    ]
