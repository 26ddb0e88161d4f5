"""The checked-in OpenAPI document is what the code generates: a drift test."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys

from gateway.api.app import create_app
from gateway.config import ROOT, Settings

CHECKED_IN = ROOT / "openapi" / "openapi.json"
FIX = "openapi/openapi.json is out of date with the code: run `gateway openapi --write` and commit the result"


def _diff(expected: str, actual: str) -> str:
    lines = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "openapi/openapi.json (checked in)",
                                 "gateway openapi (from the code)", lineterm="", n=2)
    shown = list(lines)[:60]
    return "\n".join(shown)


def test_checked_in_document_matches_the_app() -> None:
    generated = create_app(Settings()).openapi()
    checked_in = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    if generated != checked_in:
        raise AssertionError(
            f"{FIX}\n"
            + _diff(json.dumps(checked_in, indent=2, ensure_ascii=False), json.dumps(generated, indent=2,
                                                                                    ensure_ascii=False))
        )


def test_gateway_openapi_command_prints_the_checked_in_file_byte_for_byte() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    out = subprocess.run([sys.executable, "-m", "gateway", "openapi"], cwd=ROOT, env=env, capture_output=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    printed = out.stdout.decode("utf-8")
    expected = CHECKED_IN.read_text(encoding="utf-8")
    assert printed == expected, f"{FIX}\n{_diff(expected, printed)}"


def test_document_describes_the_problem_responses() -> None:
    doc = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    post = doc["paths"]["/v1/messages"]["post"]
    assert {"202", "400", "413", "422"} <= set(post["responses"])
    assert "/v1/messages/{message_id}" in doc["paths"] and "/v1/inbound/{counterpart}" in doc["paths"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(doc["paths"])
