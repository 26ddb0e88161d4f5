"""Accepting a canonical message: stored, routed and queued in one transaction, exactly once per message_id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.canonical.errors import MessageConflict
from gateway.canonical.messages import AnyMessage, check_not_in_future, parse_message
from gateway.pipeline.ports import Clock
from gateway.pipeline.routing import Router
from gateway.storage.store import Store

REPLY_STATUS = {"referral.accepted": "accepted", "referral.completed": "completed", "referral.rejected": "rejected"}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message as it reached the gateway, with who sent it and when."""

    message: AnyMessage
    source: str
    received_at: datetime
    request_bytes: int = 0
    hop: str = "received"


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: str
    type: str
    source: str
    duplicate: bool
    response: dict[str, Any]
    queued: int = 0


class Accepter:
    def __init__(self, *, store: Store, router: Router, clock: Clock, status_url: Callable[[str], str]) -> None:
        self.store = store
        self.router = router
        self.clock = clock
        self.status_url = status_url
        self.listeners: list[Callable[[Accepted], None]] = []

    async def accept(self, *, message: AnyMessage, source: str, request_bytes: int = 0) -> Accepted:
        now = self.clock()
        check_not_in_future(message, now=now)
        incoming = Incoming(message=message, source=source, received_at=now, request_bytes=request_bytes)
        result = await self.store.committer.run(lambda conn: self.accept_in(conn, incoming))
        self.notify(result)
        return result

    def notify(self, result: Accepted) -> None:
        for listener in self.listeners:
            listener(result)

    async def accept_in(self, conn: AsyncConnection, incoming: Incoming) -> Accepted:
        """The transactional core, also used when a delivery's reply is recorded with its attempt."""
        msg = incoming.message
        message_id = str(msg.message_id)
        content = msg.to_json()
        content_hash = msg.content_hash()
        response = {
            "message_id": message_id,
            "status": "accepted",
            "received_at": incoming.received_at.isoformat().replace("+00:00", "Z"),
            "status_url": self.status_url(message_id),
        }
        inserted = await self.store.insert_message(
            conn,
            {
                "message_id": message_id,
                "type": msg.type,
                "case_id": msg.case_id,
                "occurred_at": msg.occurred_at,
                "received_at": incoming.received_at,
                "source": incoming.source,
                "content_hash": content_hash,
                "content": content,
                "accept_response": orjson.dumps(response).decode(),
            },
        )
        hop = {
            "message_id": message_id,
            "hop": incoming.hop,
            "peer": incoming.source,
            "request_in_at": incoming.received_at,
            "request_bytes": incoming.request_bytes,
        }
        if not inserted:
            existing = await self.store.existing_message(conn, message_id)
            assert existing is not None
            if existing[0] != content_hash:
                raise MessageConflict(
                    f"message_id {message_id} was accepted before with other content;"
                    " a new message needs a new message_id",
                )
            await self.store.insert_exchange(
                conn, {**hop, "response_out_at": self.clock(), "status_code": 202, "result": "duplicate"}
            )
            return Accepted(message_id, msg.type, incoming.source, True, orjson.loads(existing[1]))

        region: str | None
        if msg.type == "case.registered":
            region = msg.body.region
            await self.store.upsert_case(conn, case_id=msg.case_id, region=region, message_id=message_id)
            await self._unpark(conn, case_id=msg.case_id, region=region, now=incoming.received_at)
        else:
            region = await self.store.case_region(conn, msg.case_id)
        if msg.type == "referral.requested":
            await self.store.insert_referral(
                conn,
                {
                    "referral_id": msg.body.referral_id,
                    "case_id": msg.case_id,
                    "kind": msg.body.kind,
                    "risk_id": msg.body.risk_id,
                    "request_message_id": message_id,
                    "status": "requested",
                    "updated_at": incoming.received_at,
                },
            )
        elif msg.type in REPLY_STATUS:
            await self.store.set_referral_status(
                conn, referral_id=msg.body.referral_id, status=REPLY_STATUS[msg.type], at=incoming.received_at
            )
        routes = self.router.routes(msg, region=region)
        await self.store.insert_deliveries(
            conn,
            [
                {
                    "message_id": message_id,
                    "case_id": msg.case_id,
                    "counterpart": r.counterpart,
                    "instance": r.instance,
                    "state": "pending" if r.instance else "parked",
                    "attempts": 0,
                    "next_attempt_at": incoming.received_at,
                    "created_at": incoming.received_at,
                    "reason": r.reason,
                }
                for r in routes
            ],
        )
        await self.store.insert_exchange(
            conn, {**hop, "response_out_at": self.clock(), "status_code": 202, "result": "accepted"}
        )
        return Accepted(message_id, msg.type, incoming.source, False, response, queued=sum(1 for r in routes if r.instance))

    async def _unpark(self, conn: AsyncConnection, *, case_id: str, region: str, now: datetime) -> None:
        """Deliveries that waited for this case's region are routed now."""
        for delivery_id, counterpart, content in await self.store.parked_for_case(conn, case_id):
            parked = parse_message(content)
            for route in self.router.routes(parked, region=region):
                if route.counterpart != counterpart:
                    continue
                await self.store.reroute(conn, delivery_id, instance=route.instance, reason=route.reason, now=now)
