"""What a message's status needs beyond its own rows: the messages it caused, the referral it belongs to and
the replies that referral received; and the referral states the accepting transaction checks replies against."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from gateway.storage.audit_tables import exchange_log
from gateway.storage.db import Engines
from gateway.storage.tables import deliveries, exchanges, messages, referrals

REPLY_TYPES = ("referral.accepted", "referral.completed", "referral.rejected")
_LINK = (messages.c.message_id, messages.c.type, messages.c.case_id, messages.c.occurred_at, messages.c.received_at,
         messages.c.source)


def lock_referral_states(conn: Connection, referral_ids: set[str]) -> dict[str, tuple[str, str]]:
    """referral_id -> (case_id, status) of those known, locked until the transaction ends (PostgreSQL: FOR UPDATE,
    in referral_id order so two transactions never wait on each other crosswise; SQLite has one writer anyway)."""
    if not referral_ids:
        return {}
    query = (select(referrals.c.referral_id, referrals.c.case_id, referrals.c.status)
             .where(referrals.c.referral_id.in_(sorted(referral_ids))).order_by(referrals.c.referral_id))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return {r[0]: (r[1], r[2]) for r in conn.execute(query)}


def _body(content: bytes) -> dict[str, Any]:
    # Only risks, referrals and replies are read here: none carries a person, so nothing is sealed in them.
    body = orjson.loads(content).get("body")
    return body if isinstance(body, dict) else {}


async def message_links(engines: Engines, *, message_id: str, type: str, case_id: str,
                        refused_error: Any) -> dict[str, Any]:
    """For one stored message: `caused_by` (the risk a referral came from, the referral request a reply answers),
    `caused` (a risk's referrals, each with its referral's state), and `referral` (for a referral request or a
    reply: the referral's row, its request, its delivery to the counterpart, the replies stored and the replies
    refused). `refused_error(referral_id)` is the error text a refused reply's hop carries."""
    out: dict[str, Any] = {"caused_by": None, "caused": [], "referral": None}
    if type not in ("risk.detected", "referral.requested", *REPLY_TYPES):
        return out
    async with engines.read.connect() as conn:
        content = (await conn.execute(select(messages.c.content).where(messages.c.message_id == message_id))).scalar()
        body = _body(content) if content is not None else {}
        if type == "risk.detected":
            rows = await conn.execute(
                select(*_LINK, referrals.c.referral_id, referrals.c.kind, referrals.c.status.label("referral_status"))
                .join(referrals, referrals.c.request_message_id == messages.c.message_id)
                .where(referrals.c.case_id == case_id, referrals.c.risk_id == body.get("risk_id"))
                .order_by(messages.c.id))
            out["caused"] = [dict(r) for r in rows.mappings()]
            return out
        referral_id = body.get("referral_id")
        referral = (await conn.execute(select(referrals).where(referrals.c.referral_id == referral_id))).mappings().first()
        if referral is None:
            return out
        referral = dict(referral)
        request = (await conn.execute(select(*_LINK).where(messages.c.message_id == referral["request_message_id"]))
                   ).mappings().first()
        if type == "referral.requested" and referral["risk_id"] is not None:
            risks = await conn.execute(select(*_LINK, messages.c.content).where(
                messages.c.case_id == referral["case_id"], messages.c.type == "risk.detected").order_by(messages.c.id))
            for row in risks.mappings():
                if _body(row["content"]).get("risk_id") == referral["risk_id"]:
                    out["caused_by"] = {k: v for k, v in row.items() if k != "content"}
                    break
        elif type != "referral.requested" and request is not None:
            out["caused_by"] = dict(request)
        # Delivered when the counterpart's answer came in (the attempt's response_in_at), the moment a synchronous
        # acceptance in that answer carries too; finished_at (when the gateway recorded it) for older rows.
        answered = (select(func.max(exchanges.c.response_in_at))
                    .where(exchanges.c.delivery_id == deliveries.c.id, exchanges.c.hop == "attempt",
                           exchanges.c.result == "delivered").scalar_subquery())
        delivered = (await conn.execute(
            select(deliveries.c.counterpart, deliveries.c.instance, deliveries.c.state,
                   func.coalesce(answered, deliveries.c.finished_at).label("finished_at"))
            .where(deliveries.c.message_id == referral["request_message_id"], deliveries.c.counterpart != "probation")
            .order_by(deliveries.c.id))).mappings().all()
        replies = []
        for row in (await conn.execute(select(*_LINK, messages.c.content).where(
                messages.c.case_id == referral["case_id"], messages.c.type.in_(REPLY_TYPES))
                .order_by(messages.c.id))).mappings():
            if _body(row["content"]).get("referral_id") == referral_id:
                replies.append({k: v for k, v in row.items() if k != "content"})
        wanted = refused_error(referral_id)
        refused = []
        for row in (await conn.execute(
                select(exchange_log.c.message_id, exchange_log.c.at, exchange_log.c.peer, exchange_log.c.status_code,
                       exchange_log.c.detail)
                .where(exchange_log.c.case_id == referral["case_id"], exchange_log.c.result == "refused",
                       exchange_log.c.kind.in_(("received", "reply")))
                .order_by(exchange_log.c.seq))).mappings():
            detail = orjson.loads(row["detail"]) if row["detail"] else {}
            if detail.get("error") == wanted:
                refused.append({"message_id": row["message_id"], "at": row["at"], "peer": row["peer"],
                                "status_code": row["status_code"]})
    out["referral"] = {**referral, "request": dict(request) if request is not None else None,
                       "deliveries": [dict(d) for d in delivered], "replies": replies, "refused": refused}
    return out
