"""The administrator's workspace in a real browser: a live change with a dry run, history and roll back;
100 dead letters replayed in bulk, each received once; roles."""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from tests.browser.support import (
    isolated_context,
    new_stack,
    script_errors,
    shot,
    sign_in,
    signed_in_page,
)
from tests.browser.test_console_auditor import PASSPHRASE
from tests.harness import Stack, free_port, wait_for
from gateway.samples import SampleCases
from security.keys import KeyStore

pytestmark = pytest.mark.browser
ADMIN_PAGES = ("/console/admin/counterparts", "/console/admin/counterparts/mio-kz-35", "/console/admin/outbox",
               "/console/admin/dead-letters", "/console/admin/alerts", "/console/admin/keys", "/console/admin/mappings")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("admin-console")
    stack = new_stack(tmp)
    KeyStore(tmp / "keys", passphrase=PASSPHRASE).generate(channel="json")
    stack.start_gateway(keys_dir=tmp / "keys", key_passphrase=PASSPHRASE, console_strict_i18n=True,
                        replay_rate_per_s=200, client_use_flush_s=0.2)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def admin(browser: Any, live: Stack) -> Iterator[tuple[Any, list[str], list[str]]]:
    with signed_in_page(browser, live, live.admin_token, timeout_ms=20_000) as signed:
        yield signed


def _patch(stack: Stack, **fields: Any) -> None:
    r = stack.admin.patch("/v1/admin/counterparts/mio-kz-35", json=fields)
    assert r.status_code == 200, r.text


def test_a_change_with_a_dry_run_applies_live_shows_in_history_and_rolls_back(admin: Any, live: Stack) -> None:
    page, elsewhere, errors = admin
    before = live.admin.get("/v1/admin/counterparts/mio-kz-35").json()
    page.click("nav.main a[href$='/admin/counterparts']")
    assert page.get_attribute("#instances tr[data-instance='mio-kz-35']", "data-breaker") == "closed"
    shot(page, "admin-counterparts")
    page.click("#instances a[href$='/admin/counterparts/mio-kz-35']")
    page.fill("#f-timeout_s", "7.5")
    page.click("#dry-run-button")
    assert page.locator("#diff tbody tr").count() == 1
    assert page.locator("#diff tr[data-field=timeout_s] td").all_inner_texts() == [
        "timeout_s", str(before["timeout_s"]), "7.5"]
    assert live.admin.get("/v1/admin/counterparts/mio-kz-35").json()["timeout_s"] == before["timeout_s"]
    shot(page, "admin-dry-run")
    page.click("#apply-button")
    page.wait_for_selector("#notice")
    applied = live.admin.get("/v1/admin/counterparts/mio-kz-35").json()
    assert applied["timeout_s"] == 7.5  # the running gateway uses it, no restart
    version = applied["version"]
    row = page.locator(f"#history tr[data-version='{version}']")
    assert "timeout_s" in row.inner_text() and "7.5" in row.inner_text()

    page.fill("#f-timeout_s", "9")  # a second change, then back to the first version
    page.click("#dry-run-button")
    page.click("#apply-button")
    page.wait_for_selector("#notice")
    assert live.admin.get("/v1/admin/counterparts/mio-kz-35").json()["timeout_s"] == 9
    page.locator(f"#history tr[data-version='{version}'] button.rollback").click()
    page.wait_for_selector("#notice")
    rolled = live.admin.get("/v1/admin/counterparts/mio-kz-35").json()
    assert rolled["timeout_s"] == 7.5 and rolled["version"] == version + 2
    assert page.locator("#history tr[data-version]").count() == 3

    changes = live.auditor.get("/v1/audit/exchanges", params={"kind": "admin", "limit": 500}).json()["items"]
    applied_rows = [c for c in changes if c["result"] == "applied" and c["client"] == "admin-1"]
    assert len(applied_rows) >= 3  # every change is an exchange-log record, with before and after in its bytes
    for row in applied_rows:
        kept = live.auditor.get(f"/v1/audit/exchanges/{row['seq']}", params={"reason": "admin audit"}).json()
        change = json.loads(kept["request"]["content"])
        assert change["before"] and change["after"] and change["before"] != change["after"]
    assert not elsewhere and not script_errors(errors)


def test_a_hundred_dead_letters_are_filtered_replayed_once_each(admin: Any, live: Stack) -> None:
    page, elsewhere, errors = admin
    samples = SampleCases(seed=7)
    case = next(m[0] for m in iter(samples.case, None) if m[0]["body"]["region"] == "KZ-35")
    assert live.client.post("/v1/messages", json=case).status_code == 202
    dead_port = free_port()  # nothing listens: a refused connection, given up at once (one attempt allowed)
    _patch(live, base_url=f"http://127.0.0.1:{dead_port}", retry={"max_attempts": 1},
           breaker={"failure_threshold": 1000})  # every one dead-lettered, none held behind an open breaker
    referrals = [samples.shelter_referral(case["case_id"]) for _ in range(100)]
    for referral in referrals:
        assert live.client.post("/v1/messages", json=referral).status_code == 202
    ids = {r["message_id"] for r in referrals}

    def dead() -> list[dict[str, Any]]:
        items = live.admin.get("/v1/admin/dead-letters", params={"limit": 500}).json()["items"]
        return [d for d in items if d["message_id"] in ids]

    wait_for(lambda: len(dead()) == 100, timeout=60, what="100 dead letters")
    _patch(live, base_url=live.mio.url, retry={"max_attempts": 6}, breaker=None)  # the counterpart is back

    page.goto(f"{live.gateway_url}/console/admin/dead-letters")
    page.select_option("#f-instance", "mio-kz-35")
    page.click("#dead-filters button[type=submit]")
    assert page.locator("#dead-letters tbody tr").count() == 100
    assert "refused:" in page.locator("#dead-letters tbody tr").first.inner_text()  # not "timeout"
    shot(page, "admin-dead-letters")
    page.click("#replay-matching")
    page.wait_for_selector("#notice")
    assert "100" in page.inner_text("#notice")

    def received_once() -> bool:
        attempts = httpx.get(f"{live.mio.url}/_sim/stats").json()["attempts"]
        return all(len(attempts.get(mid, [])) == 1 for mid in ids)

    wait_for(received_once, timeout=60, what="each replayed referral at the simulator")
    attempts = httpx.get(f"{live.mio.url}/_sim/stats").json()["attempts"]
    assert sorted(len(attempts[mid]) for mid in ids) == [1] * 100  # exactly once each, counted there
    replays = [r for r in live.auditor.get("/v1/audit/exchanges", params={"kind": "admin", "limit": 500}).json()[
        "items"] if r["result"] == "replayed"]
    assert len(replays) == 1 and replays[0]["detail"]["error"] == "100 dead letters replayed"
    assert not elsewhere and not script_errors(errors)


def test_every_admin_page_answers_an_auditor_with_the_403_page(browser: Any, live: Stack) -> None:
    context, elsewhere = isolated_context(browser, live.gateway_url)
    page = context.new_page()
    try:
        sign_in(page, live, live.auditor_token)
        for path in ADMIN_PAGES:
            response = page.goto(live.gateway_url + path)
            assert response.status == 403, path
            assert page.locator(".error-page .error").count() == 1
        refused = live.auditor.get("/v1/audit/exchanges", params={"kind": "refused"}).json()["items"]
        assert sum(1 for r in refused if r["client"] == "auditor-1" and "/console/admin/" in r["detail"]["error"]) \
            >= len(ADMIN_PAGES)
        assert not elsewhere
    finally:
        context.close()


def test_every_admin_page_in_every_language(admin: Any, live: Stack) -> None:
    page, elsewhere, errors = admin
    for lang in ("kk", "ru", "en"):
        page.click(f"nav.languages a[hreflang={lang}]")
        for path in ADMIN_PAGES:
            page.goto(live.gateway_url + path)
            text = page.inner_text("body")
            assert "⟦" not in text, (lang, path, [t for t in text.split("⟦")[1:4]])
        if lang == "kk":
            page.goto(f"{live.gateway_url}/console/admin/keys")
            shot(page, "admin-keys-kk")
    assert not elsewhere and not script_errors(errors)


def test_a_key_is_rotated_from_the_page_after_confirmation(admin: Any, live: Stack) -> None:
    page, elsewhere, errors = admin
    before = {k["kid"] for k in live.client.get("/v1/keys").json()["keys"]}
    page.goto(f"{live.gateway_url}/console/admin/keys")
    assert page.locator("#gateway-keys tr[data-state=active]").count() == 1
    page.click("#rotate-form button[type=submit]")  # not confirmed: nothing happens
    assert page.locator(".error[role=alert]").count() == 1
    assert {k["kid"] for k in live.client.get("/v1/keys").json()["keys"]} == before
    page.check("#rotate-form input[name=confirm]")
    page.click("#rotate-form button[type=submit]")
    page.wait_for_url("**/console/admin/keys")
    assert page.locator("#gateway-keys tr[data-state=active]").count() == 1
    assert page.locator("#gateway-keys tr[data-state=retired]").count() == 1
    after = {k["kid"] for k in live.client.get("/v1/keys").json()["keys"]}
    assert before < after  # the new key is published, the old one still verifies in its overlap
    actions = live.auditor.get("/v1/audit/exchanges", params={"kind": "admin", "limit": 500}).json()["items"]
    rotated = next(a for a in actions if a["peer"] == "gateway-keys" and '"rotated":"json"' in a["detail"]["error"])
    kept = json.loads(live.auditor.get(f"/v1/audit/exchanges/{rotated['seq']}", params={"reason": "admin audit"})
                      .json()["request"]["content"])
    assert kept["before"]["active"] in before and kept["after"]["active"] not in before
    assert page.locator("#certificates tr[data-owner='mio-kz-35']").count() == 1  # its pinned certificate
    page.goto(f"{live.gateway_url}/console/admin/keys")  # this session's use was written meanwhile
    assert page.inner_text("#clients tr[data-client='admin-1'] td[data-col=last-use]") != "—"
    assert not elsewhere and not script_errors(errors)
