"""`/v1/keys`: the gateway's public keys as a JWKS, for counterparts to verify what it signs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import ContainerDep

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get("")
async def jwks(c: ContainerDep) -> dict[str, Any]:
    """Every key valid for verification now: the active ones and those still in their rotation overlap."""
    if c.keys is None:
        return {"keys": []}
    c.keys.refresh()  # a rotation done with `gateway keys` in another process shows at once
    return c.keys.jwks()
