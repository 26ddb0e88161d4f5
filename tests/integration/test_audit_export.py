"""`gateway audit export --format events`: every accepted message, with received_at, IIN masked."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from gateway.canonical.iin import mask_iin
from gateway.config import ROOT
from gateway.samples import SampleCases
from tests.harness import Stack, wait_for


def test_events_export_holds_every_message_without_a_clear_iin(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=41)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    referral = samples.shelter_referral(case["case_id"])
    for message in (case, referral):
        assert stack.client.post(f"/v1/messages", json=message).status_code == 202
    # the referral, its acceptance and completion (from МИО), all stored
    wait_for(lambda: httpx.get(f"{stack.probation.url}/_sim/stats").json()["unique_messages"] >= 2,
             what="replies delivered")
    out = stack.tmp / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "export", "--format", "events", "--output", str(out)],
        env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    types = [line["type"] for line in lines]
    assert types[:2] == ["case.registered", "referral.requested"]
    assert {"referral.accepted", "referral.completed"} <= set(types)
    assert f"exported {len(lines)} events" in result.stderr
    assert all(line["received_at"].endswith("Z") for line in lines)
    iin = case["body"]["person"]["iin"]
    assert iin not in text and lines[0]["body"]["person"]["iin"] == mask_iin(iin)
    assert lines[1]["message_id"] == referral["message_id"] and lines[1]["body"] == referral["body"]
