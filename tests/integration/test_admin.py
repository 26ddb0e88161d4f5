"""Administration through the API: a counterpart changed live with a dry run and an audit event; dead letters replayed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx

from adapters.mio.simulator import create_app as mio_app
from gateway.config import ROOT
from gateway.samples import SampleCases
from tests.harness import Stack, ThreadServer, sim_config, wait_for
from tests.integration.test_bad_input import _query


def _case_and_referral(stack: Stack, seed: int) -> dict:
    samples = SampleCases(seed=seed)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    referral = samples.shelter_referral(case["case_id"])
    for message in (case, referral):
        assert stack.client.post("/v1/messages", json=message).status_code == 202
    return referral


def _status(stack: Stack, message_id: str) -> dict:
    return stack.client.get(f"/v1/messages/{message_id}").json()


def _admin_events(stack: Stack) -> list[tuple]:
    return _query(stack.database_url, "SELECT client, peer, result, request_raw FROM exchange_log WHERE kind = 'admin' "
                                      "ORDER BY seq")


def test_a_counterpart_change_is_validated_dry_run_then_applied_live_and_audited(stack: Stack) -> None:
    stack.start_gateway()
    # A second МИО for KZ-35, with the same pinned key, where the administrator moves the instance to.
    moved = ThreadServer(mio_app(name="mio-kz-35", callback_url=f"{stack.gateway_url}/v1/inbound/mio",
                                 signer=stack.sim_signer("mio-kz-35"))).start()
    stack.servers.append(moved)
    before = stack.admin.get("/v1/admin/counterparts").json()
    assert before["source"] == "file" and before["version"] is None
    assert {i["name"] for i in before["instances"]} == {"probation", "mio-kz-35"}

    # invalid: named field, nothing applied
    for patch, pointer in (({"timeout_s": -1}, "/timeout_s"), ({"colour": "red"}, "/colour"),
                           ({"base_url": "not a url"}, "/base_url"), ({"keys": ["nowhere.crt.pem"]}, "keys")):
        r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", json=patch)
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith(":invalid-configuration") and pointer in r.text, r.text
    assert stack.admin.get("/v1/admin/counterparts").json() == before

    # dry run: the change and the wire message a sample would become, nothing applied
    r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", params={"dry_run": "true"},
                          json={"base_url": moved.url, "timeout_s": 3})
    assert r.status_code == 200, r.text
    dry = r.json()
    assert dry["applied"] is False and dry["after"]["base_url"].rstrip("/") == moved.url
    assert dry["sample"]["url"].startswith(moved.url) and dry["sample"]["method"] == "POST"
    assert "requestId" in json.loads(dry["sample"]["body"])
    assert stack.admin.get("/v1/admin/counterparts").json() == before
    assert _admin_events(stack) == []

    # roles: neither an auditor nor the Probation IS may change configuration
    assert stack.auditor.patch("/v1/admin/counterparts/mio-kz-35", json={"timeout_s": 3}).status_code == 403
    assert stack.client.patch("/v1/admin/counterparts/mio-kz-35", json={"timeout_s": 3}).status_code == 403
    assert stack.auditor.get("/v1/admin/counterparts").status_code == 403

    # applied live: the next referral goes to the new address, no restart
    r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", json={"base_url": moved.url, "timeout_s": 3})
    assert r.status_code == 200 and r.json()["applied"] is True and r.json()["version"] == 1, r.text
    referral = _case_and_referral(stack, seed=5)
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered", what="delivered")
    got = [m["requestId"] for m in httpx.get(f"{moved.url}/_sim/received").json()]
    assert referral["message_id"] in got
    assert referral["message_id"] not in [m["requestId"] for m in httpx.get(f"{stack.mio.url}/_sim/received").json()]

    # the audit event: who, before and after, in the chained log
    events = _admin_events(stack)
    assert len(events) == 1 and events[0][0] == "admin-1" and events[0][1] == "mio-kz-35"
    current = stack.admin.get("/v1/admin/counterparts/mio-kz-35").json()
    assert current["version"] == 1 and current["timeout_s"] == 3


def test_a_dead_letter_is_inspected_and_replayed(stack: Stack) -> None:
    stack.start_gateway()
    sim_config(stack.mio, per_message=[400], callbacks=False)
    referral = _case_and_referral(stack, seed=6)
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "dead_letter", what="dead letter")
    listed = stack.admin.get("/v1/admin/dead-letters").json()["items"]
    dead = next(d for d in listed if d["message_id"] == referral["message_id"])
    detail = stack.admin.get(f"/v1/admin/dead-letters/{dead['id']}").json()
    assert detail["state"] == "dead" and detail["attempt_log"][0]["status_code"] == 400
    assert "content" not in detail and "person" not in json.dumps(detail)  # metadata only for an admin
    assert stack.auditor.post(f"/v1/admin/dead-letters/{dead['id']}/replay").status_code == 403

    r = stack.admin.post(f"/v1/admin/dead-letters/{dead['id']}/replay")  # the simulator now answers 201
    assert r.status_code == 200, r.text
    wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered", what="delivered after replay")
    again = stack.admin.post(f"/v1/admin/dead-letters/{dead['id']}/replay")
    assert again.status_code == 409 and again.json()["type"].endswith(":not-dead-lettered")
    assert stack.admin.post("/v1/admin/dead-letters/999999/replay").status_code == 404
    assert [(e[0], e[2]) for e in _admin_events(stack)] == [("admin-1", "replayed")]


def test_a_change_made_elsewhere_reaches_a_running_gateway_without_restart(stack: Stack) -> None:
    import subprocess
    import sys

    from gateway.config import ROOT

    stack.start_gateway(config_poll_interval_s=0.2)
    env = stack.env()
    done = subprocess.run([sys.executable, "-m", "gateway", "counterparts", "set", "mio-kz-35", "timeout_s=4",
                           "max_in_flight=8"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == 1
    wait_for(lambda: stack.admin.get("/v1/admin/counterparts/mio-kz-35").json()["timeout_s"] == 4,
             what="the running gateway applied the change")
    assert stack.admin.get("/v1/admin/counterparts").json()["version"] == 1
    bad = subprocess.run([sys.executable, "-m", "gateway", "counterparts", "set", "mio-kz-35", "max_in_flight=0"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "/max_in_flight" in bad.stderr
    events = _admin_events(stack)
    assert len(events) == 1 and events[0][0].startswith("cli:")


def test_an_instance_is_moved_to_another_code_table_version_live(stack: Stack, tmp_path: Path) -> None:
    # МИО publishes a new service code; the administrator moves one instance to it without a release.
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "gateway" / "mappings", mappings)
    (mappings / "codes" / "versions").mkdir()
    (mappings / "codes" / "versions" / "mio.v2.yaml").write_text(
        "version: 2\ntables:\n  mio.service:\n    codes:\n      shelter.placement: SHELTER_PLACEMENT_2\n")
    stack.start_gateway(mappings_dir=mappings)

    r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", json={"mapping_version": 9})
    assert r.status_code == 422 and "/mapping_version" in r.text and "no version 9" in r.text, r.text
    r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", params={"dry_run": "true"}, json={"mapping_version": 2})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["sample"]["body"])["service"] == "SHELTER_PLACEMENT_2"
    before = _case_and_referral(stack, seed=21)
    wait_for(lambda: _status(stack, before["message_id"])["status"] == "delivered", what="delivered")

    r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", json={"mapping_version": 2})
    assert r.status_code == 200 and r.json()["applied"] is True, r.text
    after = _case_and_referral(stack, seed=22)
    wait_for(lambda: _status(stack, after["message_id"])["status"] == "delivered", what="delivered")
    services = {m["requestId"]: m["service"] for m in httpx.get(f"{stack.mio.url}/_sim/received").json()}
    assert services[before["message_id"]] == "SHELTER_PLACEMENT"
    assert services[after["message_id"]] == "SHELTER_PLACEMENT_2"
    events = _admin_events(stack)
    assert len(events) == 1 and events[0][:2] == ("admin-1", "mio-kz-35")
    assert stack.admin.get("/v1/admin/counterparts/mio-kz-35").json()["mapping_version"] == 2
