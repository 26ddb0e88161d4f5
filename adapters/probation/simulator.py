"""A Probation IS receiver: records every canonical message the gateway pushes to it."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

from adapters.probation.codec import RECEIVE_PATH
from adapters.simulation import SimSigner, signed_response, apply_faults, simulator_app


def create_app(*, name: str = "probation", signer: SimSigner | None = None) -> FastAPI:
    app, state, _ = simulator_app("Probation IS receiver (simulator)", name=name, signer=signer)

    @app.post(RECEIVE_PATH)
    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            doc = orjson.loads(body)
            message_id = str(doc["message_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Response(b'{"error":"bad request"}', status_code=400, media_type="application/json")
        fault = await apply_faults(state, message_id)
        if fault is not None:
            return fault
        if message_id not in state.processed:
            state.received.append(doc)
        state.processed[message_id] = 1  # a repeat is acknowledged again, not recorded twice
        return signed_response(state, 200, orjson.dumps({"received": message_id}), "application/json")

    return app
