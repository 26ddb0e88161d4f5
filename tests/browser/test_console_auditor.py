"""The auditor's workspace in a real browser against a live gateway with simulators and traffic."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from gateway.config import ROOT
from security.keys import KeyStore
from tests.browser.support import (
    collect_console_errors,
    isolated_context,
    new_stack,
    script_errors,
    shot,
    sign_in,
    signed_in_page,
)
from tests.harness import wait_for
from tests.integration.test_audit_api import _cases

pytestmark = pytest.mark.browser
PASSPHRASE = "test-only passphrase"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A gateway (strict catalogues: a missing translation shows as ⟦text⟧) with two cases, one referral
    completed by the МИО simulator, and a signed checkpoint."""
    tmp = tmp_path_factory.mktemp("console")
    stack = new_stack(tmp)
    KeyStore(tmp / "keys", passphrase=PASSPHRASE).generate(channel="json")
    stack.start_gateway(keys_dir=tmp / "keys", key_passphrase=PASSPHRASE, audit_checkpoint_interval_s=0.2,
                        console_strict_i18n=True, console_language="ru")
    (case_a, case_b), referral = _cases()
    for message in (case_a, case_b, referral):
        assert stack.client.post("/v1/messages", json=message).status_code == 202
    wait_for(lambda: any(m["type"] == "referral.completed"
                         for m in httpx.get(f"{stack.probation.url}/_sim/received").json()), what="completion")
    wait_for(lambda: stack.auditor.get(f"/v1/sla/cases/{case_a['case_id']}").json()["legs"], what="legs")
    try:
        yield {"stack": stack, "case_a": case_a, "case_b": case_b, "referral": referral, "tmp": tmp}
    finally:
        stack.close()










@pytest.fixture
def auditor(browser: Any, live: dict[str, Any]) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A signed-in auditor's page in a context that may reach the gateway's origin only."""
    with signed_in_page(browser, live["stack"], live["stack"].auditor_token) as signed:
        yield signed


def test_auditor_searches_by_case_and_iin_and_opens_a_record_with_a_reason(auditor: Any, live: dict[str, Any]
                                                                          ) -> None:
    page, elsewhere, errors = auditor
    stack, case_a = live["stack"], live["case_a"]
    iin = case_a["body"]["person"]["iin"]
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    page.click("nav.main a[href$='/audit/exchanges']")
    page.fill("#f-case_id", case_a["case_id"])
    page.click("#exchange-filters button[type=submit]")
    rows = page.locator("#exchange-results tbody tr")
    assert rows.count() > 0
    assert set(page.locator("#exchange-results tbody tr td:nth-child(5)").all_inner_texts()) == {case_a["case_id"]}
    seqs = [int(s) for s in page.locator("#exchange-results tbody tr td:first-child").all_inner_texts()]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    shot(page, "exchange-log")

    page.fill("#f-case_id", "")
    page.fill("#f-iin", iin)
    page.click("#exchange-filters button[type=submit]")
    by_iin = page.locator("#exchange-results tbody tr td:nth-child(5)").all_inner_texts()
    assert by_iin and set(by_iin) <= {case_a["case_id"], "—"}
    assert page.input_value("#f-iin") == iin  # the form keeps what was typed

    # The oldest record received is the case's registration: the person's IIN is in its wire bytes.
    received = page.locator("#exchange-results tbody tr").filter(
        has=page.locator("td:nth-child(3)", has_text=re.compile("^received$"))).last
    seq = int(received.get_attribute("data-seq"))
    received.locator("td:last-child a").click()
    page.wait_for_url(f"**/console/audit/exchanges/{seq}")
    page.click("#reason-form button[type=submit]")  # no reason: refused on the page, nothing shown
    page.fill("#f-reason", "")
    page.evaluate("document.getElementById('f-reason').removeAttribute('required')")
    page.click("#reason-form button[type=submit]")
    assert page.locator(".field-error").count() == 1 and "wire-bytes" not in page.content()
    page.fill("#f-reason", "жалоба 2026/117: проверка направления")
    page.click("#reason-form button[type=submit]")
    assert page.locator("pre.wire-bytes").count() >= 1
    assert iin in page.locator("pre.wire-bytes").first.inner_text()  # the only page with the person in clear
    assert "✓" in page.inner_text("#chain-check") and "✓" in page.inner_text("#signature-check")
    shot(page, "exchange-detail")

    reads = stack.auditor.get("/v1/audit/exchanges", params={"kind": "audit-read"}).json()["items"]
    assert any(json.loads(r["detail"]["error"]) == {"read_seq": seq, "reason": "жалоба 2026/117: проверка направления"}
               and r["client"] == "auditor-1" for r in reads)
    searches = stack.auditor.get("/v1/audit/exchanges", params={"kind": "audit-search"}).json()["items"]
    assert searches and all(iin not in json.dumps(s) for s in searches)
    assert urls and not [u for u in urls if iin in u]  # the IIN went in POST bodies only
    assert not elsewhere and not script_errors(errors)


def test_case_view_shows_the_whole_chain_with_legs(auditor: Any, live: dict[str, Any]) -> None:
    page, elsewhere, errors = auditor
    stack, case_a, referral = live["stack"], live["case_a"], live["referral"]
    page.goto(f"{stack.gateway_url}/console/audit/cases")
    page.fill("#f-case", case_a["case_id"])
    page.click("main form button[type=submit]")
    chain = page.locator(f"article.chain[data-referral='{referral['body']['referral_id']}']")
    assert chain.get_attribute("data-outcome") == "completed"
    assert chain.locator("ol.steps li.done").count() == 4
    api = stack.auditor.get(f"/v1/sla/cases/{case_a['case_id']}").json()
    shown = [(row.get_attribute("data-rule"), row.get_attribute("data-status"))
             for row in page.locator("#legs tbody tr").all()]
    assert shown == [(leg["rule"], leg["status"]) for leg in api["legs"]] and shown
    types = page.locator("#timeline tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert {"case.registered", "referral.requested", "referral.completed"} <= set(types)
    shot(page, "case")
    assert not elsewhere and not script_errors(errors)


def test_dashboard_numbers_equal_the_sla_report(auditor: Any, live: dict[str, Any]) -> None:
    page, elsewhere, errors = auditor
    stack = live["stack"]
    as_of = (datetime.now(timezone.utc) + timedelta(days=200)).replace(microsecond=0)
    report = stack.auditor.get("/v1/sla/report", params={"as_of": as_of.isoformat()}).json()
    page.goto(f"{stack.gateway_url}/console/audit/sla?as_of={as_of.isoformat().replace('+', '%2B')}")
    assert page.get_attribute("#as-of", "data-as-of") == report["as_of"]
    for table, source in (("by-rule", report["summary"]), ("by-region", report["kpi"]["compliance_by_region"]),
                          ("by-counterpart", report["kpi"]["compliance_by_counterpart"])):
        rows = page.locator(f"table[data-table='{table}'] tbody tr")
        shown = {}
        for row in rows.all():
            cells = {c.get_attribute("data-col"): c for c in row.locator("td[data-col]").all()}
            value = cells["compliance"].get_attribute("data-value")
            shown[row.get_attribute("data-key")] = {
                **{s: int(cells[s].inner_text()) for s in ("met", "breached", "overdue", "open")},
                "compliance": float(value) if value else None}
        assert shown == source, table
    day180 = page.get_attribute("[data-kpi=day180_success]", "data-value")
    expected = report["kpi"]["day180"]["successful_share"]
    assert (float(day180) if day180 else None) == expected
    shot(page, "sla-dashboard")
    with page.expect_download() as download:
        page.click("#sla-csv")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("case_id,rule") and len(text.splitlines()) == len(report["legs"]) + 1
    assert not elsewhere and not script_errors(errors)


def test_case_evidence_export_recomputes_offline(auditor: Any, live: dict[str, Any]) -> None:
    page, elsewhere, errors = auditor
    stack, case_a, tmp = live["stack"], live["case_a"], live["tmp"]
    page.goto(f"{stack.gateway_url}/console/audit/cases/{case_a['case_id']}")
    page.click("a[href*='/audit/export?case_id=']")
    assert page.input_value("#f-case_id") == case_a["case_id"]
    page.check("input[name=format][value=events]")
    page.fill("#f-reason", "запрос прокуратуры № 41")
    shot(page, "export")
    with page.expect_download() as download:
        page.click("#export-form button[type=submit]")
    events = tmp / "case-events.jsonl"
    download.value.save_as(events)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines and {line["case_id"] for line in lines} == {case_a["case_id"]}
    as_of = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    offline = subprocess.run([sys.executable, "-m", "gateway", "sla", "report", "--events", str(events),
                              "--as-of", as_of], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert offline.returncode == 0, offline.stderr
    live_legs = stack.auditor.get(f"/v1/sla/cases/{case_a['case_id']}", params={"as_of": as_of}).json()["legs"]
    assert json.loads(offline.stdout)["legs"] == live_legs and live_legs
    exports = stack.auditor.get("/v1/audit/exchanges", params={"kind": "audit-export"}).json()["items"]
    assert any(json.loads(e["detail"]["error"]) == {"export": "events", "reason": "запрос прокуратуры № 41",
                                                    "scope": {"case_id": case_a["case_id"]}} for e in exports)
    assert not elsewhere and not script_errors(errors)


PAGES = ("/console/", "/console/audit/exchanges", "/console/audit/exchanges/1", "/console/audit/cases",
         "/console/audit/sla", "/console/audit/integrity", "/console/audit/export", "/console/audit/cases/{case}",
         "/console/audit/nothing-here")


def test_every_page_in_every_language_has_its_catalogue_entries(browser: Any, live: dict[str, Any]) -> None:
    stack, case_a = live["stack"], live["case_a"]
    context, elsewhere = isolated_context(browser, stack.gateway_url)
    page = context.new_page()
    errors = collect_console_errors(page)
    try:
        page.goto(f"{stack.gateway_url}/console/sign-in")
        for lang, name in (("kk", "Қазақша"), ("ru", "Русский"), ("en", "English")):
            page.click(f"nav.languages a[hreflang={lang}]")  # the switch in the header, remembered by a cookie
            assert page.get_attribute("html", "lang") == lang
            assert "⟦" not in page.inner_text("body"), (lang, "sign-in")
        sign_in(page, stack, stack.auditor_token)
        for lang in ("kk", "ru", "en"):
            page.click(f"nav.languages a[hreflang={lang}]")
            for path in PAGES:
                page.goto(stack.gateway_url + path.format(case=case_a["case_id"]))
                assert page.get_attribute("html", "lang") == lang
                text = page.inner_text("body")
                assert "⟦" not in text, (lang, path, re.findall(r"⟦[^⟧]*⟧", text))
            page.goto(f"{stack.gateway_url}/console/audit/exchanges/1")
            page.fill("#f-reason", "проверка перевода")
            page.click("#reason-form button[type=submit]")
            assert "⟦" not in page.inner_text("body"), (lang, "detail")
            if lang == "kk":
                shot(page, "exchange-detail-kk")
        assert not elsewhere and not script_errors(errors)
    finally:
        context.close()


def test_roles_csrf_cookies_and_sign_out(browser: Any, live: dict[str, Any]) -> None:
    stack = live["stack"]
    context, elsewhere = isolated_context(browser, stack.gateway_url)
    page = context.new_page()
    try:
        sign_in(page, stack, stack.admin_token)
        response = page.goto(f"{stack.gateway_url}/console/audit/exchanges")
        assert response.status == 403 and page.locator("h1").count() == 1 and page.locator(".error").count() == 1
        context.clear_cookies()
        sign_in(page, stack, stack.auditor_token)
        cookie = next(c for c in context.cookies() if c["name"] == "gw_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
        assert not cookie["secure"]  # plain HTTP on loopback here; under TLS the flag is set (test below)
        assert stack.auditor_token not in page.content()
        # A form posted without its token changes nothing.
        refused = page.request.post(f"{stack.gateway_url}/console/audit/integrity", form={})
        assert refused.status == 403
        page.goto(f"{stack.gateway_url}/console/audit/exchanges")
        page.click("form.sign-out button")
        page.wait_for_url("**/console/sign-in?signed_out=1")
        old = httpx.get(f"{stack.gateway_url}/console/audit/exchanges", cookies={"gw_session": cookie["value"]},
                        follow_redirects=False)
        assert old.status_code == 303 and "/console/sign-in" in old.headers["location"]
        assert not elsewhere
    finally:
        context.close()


def test_integrity_page_says_intact_then_names_the_edited_record(browser: Any, tmp_path: Path) -> None:
    stack = new_stack(tmp_path)
    try:
        KeyStore(tmp_path / "keys", passphrase=PASSPHRASE).generate(channel="json")
        stack.start_gateway(keys_dir=tmp_path / "keys", key_passphrase=PASSPHRASE, audit_checkpoint_interval_s=0.2)
        (case_a, _), referral = _cases()
        for message in (case_a, referral):
            assert stack.client.post("/v1/messages", json=message).status_code == 202
        wait_for(lambda: len(stack.auditor.get("/v1/audit/exchanges").json()["items"]) >= 6, what="traffic")
        context, elsewhere = isolated_context(browser, stack.gateway_url)
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, stack, stack.auditor_token)
        page.goto(f"{stack.gateway_url}/console/audit/integrity")
        page.click("#verify-start")
        page.wait_for_selector("#verdict[data-verdict=intact]")
        assert page.locator("#checkpoints tbody tr").count() >= 1
        shot(page, "integrity")

        # An attacker with the database file: the append-only triggers dropped, one record's detail edited.
        db = sqlite3.connect(tmp_path / "gateway.db")
        triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
        for name in triggers:
            db.execute(f'DROP TRIGGER "{name}"')
        target = db.execute("SELECT seq FROM exchange_log WHERE kind='attempt' ORDER BY seq LIMIT 1").fetchone()[0]
        db.execute("UPDATE exchange_log SET status_code = 299 WHERE seq = ?", (target,))
        db.commit()
        db.close()
        page.click("#verify-start")
        page.wait_for_selector("#verdict[data-verdict=broken]")
        assert page.get_attribute("#verdict", "data-seq") == str(target)
        assert str(target) in page.inner_text("#verdict")
        assert not elsewhere
        context.close()
    finally:
        stack.close()
