"""A МИО simulator: accepts referrals over REST/JSON and later calls back `REFERRAL_COMPLETED`."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
from fastapi import FastAPI, Request, Response

from adapters.simulation import SimSigner, answer, apply_faults, repeat, simulator_app


def create_app(*, name: str = "mio", callback_url: str = "http://127.0.0.1:8080/v1/inbound/mio", signer: SimSigner | None = None) -> FastAPI:
    app, state, sender = simulator_app("МИО simulator", name=name, callback_url=callback_url, signer=signer)

    async def _receive(request: Request, kind: str) -> Response:
        body = await request.body()
        try:
            doc = orjson.loads(body)
            request_id = str(doc["requestId"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Response(b'{"error":"bad request"}', status_code=400, media_type="application/json")
        fault = await apply_faults(state, request_id)
        if fault is not None:
            return fault
        if (again := repeat(state, request_id)) is not None:
            return again
        state.processed[request_id] = state.processed.get(request_id, 0) + 1
        state.received.append(doc)
        now = datetime.now(timezone.utc).isoformat()
        if kind == "referral":
            body_out = orjson.dumps({"requestId": request_id, "referralId": doc.get("referralId"),
                                   "status": "ACCEPTED", "decidedAt": now})
            sender.schedule(
                orjson.dumps({"eventId": str(uuid.uuid4()), "event": "REFERRAL_COMPLETED",
                              "referralId": doc.get("referralId"), "caseRef": doc.get("caseRef"),
                              "occurredAt": datetime.now(timezone.utc).isoformat(),
                              "outcome": "placed in a crisis centre"}),
                {"content-type": "application/json"},
            )
        else:
            body_out = orjson.dumps({"requestId": request_id, "status": "RECEIVED"})
        return answer(state, request_id, 201, body_out)

    @app.post("/api/v1/referrals")
    async def referrals(request: Request) -> Response:
        return await _receive(request, "referral")

    @app.post("/api/v1/escalations")
    async def escalations(request: Request) -> Response:
        return await _receive(request, "escalation")

    return app
