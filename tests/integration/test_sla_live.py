"""Live SLA: the report over the store equals the offline recomputation; overdue legs escalate once."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import httpx

from gateway.config import ROOT
from gateway.samples import SampleCases
from tests.harness import Stack, wait_for, write_counterparts

ALMATY = timezone(timedelta(hours=5))


def _post(stack: Stack, message: dict) -> None:
    r = stack.client.post(f"/v1/messages", json=message)
    assert r.status_code == 202, r.text


def _past_case(samples: SampleCases, hours_ago: float) -> dict:
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    case["occurred_at"] = (datetime.now(ALMATY) - timedelta(hours=hours_ago)).isoformat()
    return case


def _risk(case: dict, *, domain: str, level: str, trigger: str, hours_after: float = 0.1) -> dict:
    at = datetime.fromisoformat(case["occurred_at"]) + timedelta(hours=hours_after)
    return {"message_id": str(uuid.uuid4()), "type": "risk.detected", "case_id": case["case_id"],
            "occurred_at": at.isoformat(),
            "body": {"risk_id": f"R-{uuid.uuid4().hex[:6]}", "domain": domain, "level": level, "trigger": trigger}}


def test_offline_report_on_the_events_export_equals_the_live_report(stack: Stack) -> None:
    stack.start_gateway()
    samples = SampleCases(seed=51)
    for hours_ago in (80, 50, 2):
        case = _past_case(samples, hours_ago)
        _post(stack, case)
        _post(stack, _risk(case, domain="housing", level="R3", trigger="homeless"))
        _post(stack, _risk(case, domain="economic", level="R2", trigger="no_income"))
    # shelter referrals go to МИО, which accepts and completes them; economic ones have no МТСЗН here
    wait_for(lambda: sum(1 for m in httpx.get(f"{stack.probation.url}/_sim/received").json()
                         if m["type"] == "referral.completed") == 3, what="three shelter placements completed")
    as_of = (datetime.now(timezone.utc) + timedelta(seconds=2)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    live = stack.client.get(f"/v1/sla/report", params={"as_of": as_of})
    assert live.status_code == 200, live.text
    out = stack.tmp / "events.jsonl"
    export = subprocess.run([sys.executable, "-m", "gateway", "audit", "export", "--format", "events", "-o", str(out)],
                            env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    offline = subprocess.run([sys.executable, "-m", "gateway", "sla", "report", "--events", str(out), "--as-of", as_of],
                             env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout) == live.json()
    report = live.json()
    statuses = {(leg["rule"], leg["status"]) for leg in report["legs"]}
    assert ("economic.track", "open") in statuses  # no МТСЗН here; 7 days not passed for any case
    # МИО completes placements now: within 48 h of the 2 h old risk, too late for the 50 h and 80 h ones
    housing = report["summary"]["housing.placement"]
    assert (housing["met"], housing["breached"], housing["compliance"]) == (1, 2, 1 / 3)


def test_overdue_leg_raises_one_escalation_to_leadership_and_probation(stack: Stack, tmp_path) -> None:  # noqa: ANN001
    from adapters.mio.simulator import create_app as mio_app
    from tests.harness import ThreadServer

    leadership = ThreadServer(mio_app(name="mio-kz-35-leadership",
                                    signer=stack.sim_signer("mio-kz-35-leadership"))).start()
    stack.servers.append(leadership)
    write_counterparts(stack.counterparts, [
        {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url},
        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": stack.mio.url},
        {"name": "mio-kz-35-leadership", "counterpart": "mio", "role": "leadership", "regions": ["KZ-35"],
         "base_url": leadership.url},
    ])
    stack.start_gateway(sla_check_interval_s=0.2)
    samples = SampleCases(seed=52)
    case = _past_case(samples, hours_ago=30)
    risk = _risk(case, domain="legal", level="R2", trigger="no_documents")  # ЦОН is not configured: no accept
    _post(stack, case)
    _post(stack, risk)

    def escalations() -> list[dict]:
        got = httpx.get(f"{stack.probation.url}/_sim/received").json()
        return [m for m in got if m["type"] == "escalation.raised" and m["body"]["rule"] == "legal.first_action"]

    (first,) = wait_for(escalations, what="legal.first_action escalated")
    assert first["case_id"] == case["case_id"] and "legal.first_action" in first["body"]["reason"]
    wait_for(lambda: httpx.get(f"{leadership.url}/_sim/received").json(), what="leadership told")
    import time

    time.sleep(1.0)  # five more passes of the scheduler: still one escalation per leg
    assert len(escalations()) == 1
    assert [m["rule"] for m in httpx.get(f"{leadership.url}/_sim/received").json()].count("legal.first_action") == 1
    breaches = stack.client.get(f"/v1/sla/breaches").json()
    assert {(leg["rule"], leg["status"]) for leg in breaches["legs"]} >= {("legal.first_action", "overdue")}
    legs = stack.client.get(f"/v1/sla/cases/{case['case_id']}").json()
    assert {leg["rule"] for leg in legs["legs"]} >= {"ipr", "legal.first_action", "medical.routing"}
    assert [m["type"] for m in legs["timeline"]][:2] == ["case.registered", "risk.detected"]
    assert stack.client.get(f"/v1/sla/cases/nope").status_code == 404
    text = stack.client.get(f"/v1/sla/report", params={"rule": "legal.first_action"},
                     headers={"accept": "text/csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {r["rule"] for r in rows} == {"legal.first_action"} and rows[0]["status"] == "overdue"


def test_demo_run_export_recomputes_to_the_live_report(tmp_path) -> None:  # noqa: ANN001
    """The brief's promise, literally: `gateway demo`, then its events export through `gateway sla report`."""
    import os

    from tests.harness import free_port, wait_ready

    instances = [{"name": "probation", "counterpart": "probation", "base_url": f"http://127.0.0.1:{free_port()}"}]
    for name, counterpart, regions in [("mio-kz-35", "mio", ["KZ-35"]), ("mio-kz-71", "mio", ["KZ-71"]),
                                       ("mio-kz-75", "mio", ["KZ-75"]), ("con", "con", ["*"]),
                                       ("mtszn", "mtszn", ["*"]), ("health", "health", ["*"])]:
        instances.append({"name": name, "counterpart": counterpart, "regions": regions,
                          "base_url": f"http://127.0.0.1:{free_port()}"})
    counterparts = write_counterparts(tmp_path / "counterparts.yaml", instances)
    port = free_port()
    env = dict(os.environ, GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
               GATEWAY_COUNTERPARTS_FILE=str(counterparts), GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{port}",
               GATEWAY_KEYS_DIR=str(tmp_path / "demo-keys"))
    demo = subprocess.run([sys.executable, "-m", "gateway", "demo", "--duration", "6", "--rate", "4",
                           "--port", str(port)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr[-2000:]
    out = tmp_path / "events.jsonl"
    export = subprocess.run([sys.executable, "-m", "gateway", "audit", "export", "--format", "events", "-o", str(out)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert len(out.read_text().splitlines()) > 40
    as_of = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()  # some legs overdue by then
    offline = subprocess.run([sys.executable, "-m", "gateway", "sla", "report", "--events", str(out), "--as-of", as_of],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert offline.returncode == 0, offline.stderr
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--no-worker", "--port", str(port)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc=server)
        # the demo printed where its credentials are: its auditor reads the report
        credentials = json.loads((tmp_path / "demo-keys" / "clients" / "demo-credentials.json").read_text())
        assert f"credentials      {tmp_path / 'demo-keys' / 'clients' / 'demo-credentials.json'}" in demo.stderr
        live = httpx.get(f"http://127.0.0.1:{port}/v1/sla/report", params={"as_of": as_of}, timeout=30,
                         headers={"Authorization": f"Bearer {credentials['auditor_token']}"})
    finally:
        server.kill()
        server.wait()
    assert live.status_code == 200, live.text
    report = json.loads(offline.stdout)
    assert report == live.json()
    assert report["legs"] and {leg["status"] for leg in report["legs"]} >= {"met", "overdue"}
