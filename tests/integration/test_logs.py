"""The gateway's own log output (a real process, at DEBUG) is JSON lines and never carries an IIN or a name."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from gateway.samples import SampleCases
from tests.harness import Stack, wait_for


def _forms(value: str) -> set[str]:
    """Every way a log line could spell `value`: as is, JSON-escaped, and as a Python bytes repr."""
    return {value, json.dumps(value)[1:-1], repr(value.encode("utf-8"))[2:-1]}


@pytest.fixture
def stack(tmp_path: Path):  # noqa: ANN201  (SQLite only: this test is about the process's output)
    s = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        yield s
    finally:
        s.close()


def test_logs_are_json_lines_without_personal_data(stack: Stack, tmp_path: Path) -> None:
    # The МИО simulator calls back to stack.gateway_url, so the child must listen on that very port.
    stack.gateway_sock.close()
    port = stack.gateway_port
    proc = stack.spawn_gateway(port, GATEWAY_LOG_LEVEL="DEBUG")
    log_file = tmp_path / f"gateway-{port}.log"
    try:
        samples = SampleCases(seed=77)
        case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
        person = case["body"]["person"]
        referral = samples.shelter_referral(case["case_id"])
        with httpx.Client(base_url=stack.gateway_url, timeout=10, auth=stack.auth) as c:
            for message in (case, referral):
                r = c.post("/v1/messages", json=message)
                assert r.status_code == 202, r.text
            # A re-send, and refusals that carry the same person: error paths log too.
            assert c.post("/v1/messages", json=case).status_code == 202
            conflicting = copy.deepcopy(case)
            conflicting["body"]["has_minor_children"] = not case["body"]["has_minor_children"]
            assert c.post("/v1/messages", json=conflicting).status_code == 422
            bad_iin = copy.deepcopy(case)
            bad_iin["message_id"] = referral["message_id"][:-1] + ("0" if referral["message_id"][-1] != "0" else "1")
            bad_iin["body"]["person"]["iin"] = person["iin"][:11] + str((int(person["iin"][11]) + 1) % 10)
            assert c.post("/v1/messages", json=bad_iin).status_code == 422

            def status() -> dict:
                return c.get(f"/v1/messages/{referral['message_id']}").json()

            wait_for(lambda: status()["status"] == "delivered", what="referral delivered")

            # МИО's callback (referral.completed) comes back through the gateway and on to the Probation IS.
            def probation_got_completion() -> bool:
                got = httpx.get(f"{stack.probation.url}/_sim/received").json()
                ref = referral["body"]["referral_id"]
                return any(m["type"] == "referral.completed" and m["body"]["referral_id"] == ref for m in got)

            wait_for(probation_got_completion, what="completion reported to the Probation IS")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    text = log_file.read_bytes().decode("utf-8")  # the log is UTF-8
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the gateway logged nothing at DEBUG"
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON log line: {line[:300]!r}") from exc
        assert isinstance(entry, dict) and {"ts", "level", "logger", "msg"} <= set(entry), line[:300]
        entries.append(entry)
    assert any(e["level"] == "debug" for e in entries), "GATEWAY_LOG_LEVEL=DEBUG gave no debug lines"
    # The log did follow this message (so what it lacks below is meaningful).
    assert any(e["logger"] == "gateway.delivery" and e.get("message_id") == referral["message_id"]
               and e.get("outcome") == "delivered" for e in entries), "no delivery line for the referral"

    secrets = {
        "IIN": person["iin"],
        "refused IIN": bad_iin["body"]["person"]["iin"],
        "surname": person["surname"],
        "given name": person["given_name"],
    }
    if person.get("patronymic"):
        secrets["patronymic"] = person["patronymic"]
    for what, value in secrets.items():
        for form in _forms(value):
            assert form not in text, f"the log carries the person's {what} ({form!r})"
