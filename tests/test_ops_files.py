"""The deploy/ rules and dashboard stay true: promtool passes them, and every metric they name is served."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ROOT
from gateway.mapping import AlertThresholds
from gateway.samples import SampleCases
from security.keys import KeyStore
from tests.harness import Stack, sim_config, wait_for

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "gateway.json"
PASSPHRASE = "test-only passphrase"
# What PromQL spells with identifiers that are not metric names (functions are told apart by their parenthesis).
PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                          "bool", "offset"})


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package `prometheus`; .ci/run installs it)")
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    return found


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in doc["panels"] if p["type"] != "row" for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label matchers, ranges and
    grouping clauses are taken out, that are neither a keyword nor called like a function."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return {m.group(1) for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(?!\s*\()", expr)
            if m.group(1) not in PROMQL_WORDS}


def test_metric_names_are_read_from_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (counterpart_instance, le) (rate(gateway_attempt_seconds_bucket'
            '[$__rate_interval]))) / ignoring (x) gateway_b{state="pending"} > 1 and on() gateway_c')
    assert metric_names(expr) == {"gateway_attempt_seconds_bucket", "gateway_b", "gateway_c"}


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    promtool = _promtool()
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_labelled_and_explained() -> None:
    rules = _rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_the_rules_use_the_thresholds_of_the_gateways_own_alerts() -> None:
    t = AlertThresholds(**yaml.safe_load((ROOT / "gateway" / "mappings" / "alerts.yaml").read_text())["thresholds"])
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    for alert, value in (("GatewayCircuitOpen", t.circuit_open_s), ("GatewayBacklogTooOld", t.backlog_age_s),
                         ("GatewayCertificateExpiring", t.certificate_days)):
        assert re.search(rf"[<>]=?\s*{value:g}(?![\d.])", exprs[alert]), (alert, value, exprs[alert])


def test_the_dashboard_loads_and_every_panel_has_a_title_and_a_query() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert doc["schemaVersion"] >= 39 and doc["uid"]
    (source,) = [v for v in doc["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    for panel in panels:
        assert panel["title"], panel["id"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${" + source["name"] + "}", panel["title"]
        assert panel["type"] in ("timeseries", "stat", "bargauge", "table", "state-timeline"), panel["title"]


# ---- against a running gateway -------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Stack]:
    keys = KeyStore(tmp_path / "keys", passphrase=PASSPHRASE)
    keys.generate(channel="json")
    keys.generate(channel="xml")  # with a certificate: the gateway's own expiry is exported
    stack = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}")
    try:
        stack.start_gateway(keys_dir=tmp_path / "keys", key_passphrase=PASSPHRASE, audit_checkpoint_interval_s=0.2,
                            alert_check_interval_s=0.5)
        yield stack
    finally:
        stack.close()


def _scrape(stack: Stack) -> dict[str, list]:
    """Samples by name, and each family under its own name too (a counter's family drops `_total`)."""
    text = httpx.get(f"{stack.gateway_url}/metrics", timeout=10).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _value(scraped: dict[str, list], name: str, **labels: str) -> float | None:
    for sample in scraped.get(name, ()):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def _sign_in_and_verify(stack: Stack) -> None:
    """Run the console's chain verification the way an auditor does."""
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as browser:
        csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/console/sign-in").text).group(1)
        signed_in = browser.post("/console/sign-in", data={"token": stack.auditor_token, "csrf": csrf,
                                                           "next": "/console/"})
        assert signed_in.status_code in (200, 303), signed_in.text
        page = browser.get("/console/audit/integrity")
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        started = browser.post("/console/audit/integrity", data={"csrf": csrf})
        assert started.status_code in (200, 303), started.text


def test_every_metric_the_rules_and_the_dashboard_name_is_served(served: Stack) -> None:
    samples = SampleCases(seed=13)
    case = next(c[0] for c in iter(samples.case, None) if c[0]["body"]["region"] == "KZ-35")
    delivered = samples.shelter_referral(case["case_id"])
    for message in (case, delivered):
        assert served.client.post("/v1/messages", json=message).status_code == 202
    wait_for(lambda: served.client.get(f"/v1/messages/{delivered['message_id']}").json()["status"] == "delivered",
             what="a delivery")
    sim_config(served.mio, per_message=[400], callbacks=False)
    dead = samples.shelter_referral(case["case_id"])
    assert served.client.post("/v1/messages", json=dead).status_code == 202
    wait_for(lambda: served.client.get(f"/v1/messages/{dead['message_id']}").json()["status"] == "dead_letter",
             what="a dead letter")
    assert httpx.post(f"{served.gateway_url}/v1/messages", json=case).status_code == 401  # unsigned
    refused = httpx.get(f"{served.gateway_url}/v1/admin/counterparts", headers={"Authorization": "Bearer pgw_no"})
    assert refused.status_code == 401
    _sign_in_and_verify(served)

    def ready() -> dict[str, list] | None:
        m = _scrape(served)
        wanted = ("gateway_checkpoint_last_success_timestamp_seconds", "gateway_chain_verification_timestamp_seconds",
                  "gateway_sla_overdue_legs", "gateway_alerts")
        return m if all(m.get(name) for name in wanted) else None

    scraped = wait_for(ready, timeout=30, what="a checkpoint, a verification, an SLA pass and an alert pass")

    named = {name for rule in _rules() for name in metric_names(rule["expr"])}
    named |= {name for expr in _dashboard_exprs() for name in metric_names(expr)}
    assert {"gateway_backlog_oldest_age_seconds", "gateway_certificate_expiry_seconds",
            "gateway_checkpoint_age_seconds", "gateway_sla_overdue_legs", "gateway_alerts"} <= named
    missing = sorted(name for name in named if not scraped.get(name))
    assert not missing, f"named by deploy/ but not served with a sample: {missing}"

    # Prometheus sets `instance` to the scrape target: no gateway series may carry its own.
    assert not [s for ss in scraped.values() for s in ss if "instance" in s.labels]
    assert _value(scraped, "gateway_attempt_failures_total", counterpart_instance="mio-kz-35",
                  reason_class="http") == 1
    assert _value(scraped, "gateway_deliveries_dead_lettered_total", counterpart_instance="mio-kz-35") == 1
    assert _value(scraped, "gateway_chain_verification", result="intact") == 1
    assert _value(scraped, "gateway_certificate_expiry_seconds", kind="own") > 60 * 86400
    assert _value(scraped, "gateway_certificate_expiry_seconds", counterpart_instance="mio-kz-35",
                  kind="pinned") > 0
    assert _value(scraped, "gateway_circuit_open_seconds", counterpart_instance="mio-kz-35") == 0
    assert _value(scraped, "gateway_backlog_deliveries", counterpart_instance="mio-kz-35", state="pending") == 0
    # An operator's refusal is counted apart from refused messages.
    assert sum(s.value for s in scraped["gateway_operator_requests_refused_total"]) == 1
    assert sum(s.value for s in scraped["gateway_messages_refused_total"]) == 1
