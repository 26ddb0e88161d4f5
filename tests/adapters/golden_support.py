"""Golden files: compare bytes, or rewrite them with UPDATE_GOLDEN=1 (then review the diff)."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden")


def check_golden(counterpart: str, name: str, data: bytes) -> None:
    path = GOLDEN / counterpart / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1 and review it"
    assert data == path.read_bytes(), f"{path} differs; if the change is intended, UPDATE_GOLDEN=1"
