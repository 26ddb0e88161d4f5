"""Alerts over real loopback HTTP and SMTP: a counterpart down, a dead-letter storm, a pinned certificate
near expiry, an alert channel that cannot be reached; webhooks verified against the gateway's JWKS."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.mio.simulator import create_app as mio_app
from gateway.samples import SampleCases
from security.keys import KeyStore
from tests.alerts.support import (
    SMTP_PASSWORD,
    SMTP_USER,
    SmtpServer,
    console_admin,
    email_channel,
    notified,
    self_signed,
    webhook_calls,
    webhook_channel,
    webhook_receiver,
    write_alerts,
)
from tests.harness import Stack, ThreadServer, bound_socket, sim_config, wait_for, write_counterparts

PASSPHRASE = "test-only passphrase"
PATIENT = {"max_attempts": 100, "base_delay_s": 0.2, "max_delay_s": 0.4, "deadline_s": 600, "retry_after_max_s": 5}


def _instances(stack: Stack, *, mio_url: str, mio_keys: list[str] | None = None,
               breaker: dict[str, Any] | None = None, retry: dict[str, Any] | None = None) -> None:
    write_counterparts(stack.counterparts, [
        {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url, "retry": stack.retry,
         "timeout_s": 5, "keys": [stack.pin("probation")]},
        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": mio_url,
         "retry": retry or stack.retry, "timeout_s": 2, "keys": mio_keys or [stack.pin("mio-kz-35")],
         **({"breaker": breaker} if breaker else {})},
    ])


def _start(stack: Stack, tmp: Path, alerts: Path, **overrides: Any) -> None:
    keys = tmp / "gateway-keys"
    KeyStore(keys, passphrase=PASSPHRASE).generate(channel="json")  # webhooks are signed with it
    stack.start_gateway(keys_dir=keys, key_passphrase=PASSPHRASE, alerts_file=alerts, alert_check_interval_s=0.2,
                        smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, **overrides)


def _case(stack: Stack, samples: SampleCases) -> dict[str, Any]:
    while True:
        case = samples.case()[0]
        if case["body"]["region"] == "KZ-35":
            break
    assert stack.client.post("/v1/messages", json=case).status_code == 202
    return case


def _refer(stack: Stack, samples: SampleCases, case_id: str) -> dict[str, Any]:
    referral = samples.shelter_referral(case_id)
    r = stack.client.post("/v1/messages", json=referral)
    assert r.status_code == 202, r.text
    return referral


def _csrf(client: httpx.Client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/console/admin/alerts").text).group(1)


def _mail_rules(smtp: SmtpServer) -> list[str]:
    return [m["Subject"] for m in smtp.inbox.mails()]


@pytest.fixture
def smtp(tmp_path: Path):  # noqa: ANN201
    server = SmtpServer(tmp_path / "smtp")
    try:
        yield server
    finally:
        server.stop()


def _alerts_file(tmp: Path, smtp: SmtpServer, receiver: ThreadServer, **thresholds: Any) -> Path:
    shutil.copy(smtp.cert, tmp / "smtp-ca.pem")  # ca_file is relative to alerts.yaml
    wait = thresholds.pop("wait_s", 1.0)
    return write_alerts(tmp / "alerts.yaml", wait_s=wait,
                        channels=[webhook_channel(receiver.url), email_channel(smtp.port, "smtp-ca.pem")],
                        **thresholds)


def test_a_counterpart_down_longer_than_the_threshold_is_one_webhook_and_one_email_then_one_resolved(
        stack: Stack, smtp: SmtpServer) -> None:
    tmp = stack.tmp
    dead = bound_socket()  # bound, never listening: connections are refused until МИО starts on it
    mio_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    _instances(stack, mio_url=mio_url, retry=PATIENT, breaker={"failure_threshold": 2, "reset_after_s": 0.3})
    receiver = webhook_receiver(stack.gateway_url)
    stack.servers.append(receiver)
    _start(stack, tmp, _alerts_file(tmp, smtp, receiver, circuit_open_s=1.5))
    samples = SampleCases(seed=3)
    case = _case(stack, samples)
    referral = _refer(stack, samples, case["case_id"])

    firing = wait_for(lambda: [n for n in notified(receiver) if n["rule"] == "circuit_open"], timeout=30,
                      what="the circuit_open webhook")
    wait_for(lambda: _mail_rules(smtp), timeout=30, what="the circuit_open e-mail")
    assert [(a["subject"], a["state"]) for a in firing[0]["alerts"]] == [("mio-kz-35", "firing")]

    # МИО comes back on the same port: the probe goes through, the circuit closes, the alert resolves.
    mio = ThreadServer(mio_app(name="mio-kz-35", callback_url=f"{stack.gateway_url}/v1/inbound/mio",
                               signer=stack.sim_signer("mio-kz-35")), sock=dead).start()
    stack.servers.append(mio)
    wait_for(lambda: len(notified(receiver)) >= 2 and len(smtp.inbox.mails()) >= 2, timeout=30,
             what="the resolved webhook and e-mail")
    delivered = wait_for(lambda: stack.client.get(f"/v1/messages/{referral['message_id']}").json()["status"]
                         == "delivered", what="the referral delivered after all")
    assert delivered

    calls = notified(receiver)
    assert [(n["rule"], [a["state"] for a in n["alerts"]]) for n in calls] == [
        ("circuit_open", ["firing"]), ("circuit_open", ["resolved"])]
    assert webhook_calls(receiver) == 2  # each answered 200 at once: one call each, no retry
    assert all(n["_signature"]["verified"] for n in calls), calls  # RFC 9421 against the gateway's JWKS
    jwks = httpx.get(f"{stack.gateway_url}/v1/keys").json()
    assert {n["_signature"]["keyid"] for n in calls} <= {k["kid"] for k in jwks["keys"]}
    subjects = _mail_rules(smtp)
    assert subjects == ["[gateway] FIRING circuit_open: 1 alert, count 1",
                        "[gateway] RESOLVED circuit_open: 1 alert, count 1"]
    assert all(m["tls"] and m["login"] == SMTP_USER.encode() for m in smtp.inbox.messages)  # STARTTLS, then login

    admin = console_admin(stack.gateway_url, stack.admin_token)
    page = admin.get("/console/admin/alerts")
    assert page.status_code == 200
    assert re.search(r'data-rule="circuit_open"', page.text) and 'data-state="resolved"' in page.text
    # every e-mail attempt is a hop of the exchange log, next to the webhook's attempts
    attempts = stack.auditor.get("/v1/audit/exchanges", params={"kind": "attempt", "peer": "ops-mail"}).json()
    assert [r["result"] for r in attempts["items"]] == ["delivered", "delivered"]
    metrics = httpx.get(f"{stack.gateway_url}/metrics").text
    assert 'gateway_alerts{rule="circuit_open",state="firing"} 0.0' in metrics
    # notifications are not case events: the SLA report and the events export never see them
    export = stack.auditor.get("/v1/audit/export", params={"format": "events", "reason": "test"}).text
    assert "alert.notification" not in export


def test_a_storm_of_500_dead_letters_is_one_grouped_notification(tmp_path: Path, smtp: SmtpServer) -> None:
    stack = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        receiver = webhook_receiver(stack.gateway_url)
        stack.servers.append(receiver)
        _start(stack, tmp_path, _alerts_file(tmp_path, smtp, receiver, wait_s=3.0, dead_letter_quiet_s=600))
        sim_config(stack.mio, storm_status=400, storm_count=100_000)  # each referral dead-letters at once
        samples = SampleCases(seed=5)
        case = _case(stack, samples)
        referrals = [samples.shelter_referral(case["case_id"]) for _ in range(500)]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda m: stack.client.post("/v1/messages", json=m).status_code, referrals))
        assert set(codes) == {202}

        def dead() -> int:
            r = stack.admin.get("/v1/deliveries", params={"state": "dead", "limit": 1000})
            return len(r.json()["items"])

        wait_for(lambda: dead() == 500, timeout=60, what="500 dead letters")
        wait_for(lambda: notified(receiver) and smtp.inbox.mails(), timeout=30, what="the storm's notification")
        calls = notified(receiver)
        assert [(n["rule"], n["count"], [(a["subject"], a["count"]) for a in n["alerts"]]) for n in calls] == [
            ("dead_letter", 500, [("mio-kz-35", 500)])]
        assert _mail_rules(smtp) == ["[gateway] FIRING dead_letter: 1 alert, count 500"]
        assert webhook_calls(receiver) == 1 and calls[0]["_signature"]["verified"]
    finally:
        stack.close()


def test_a_pinned_certificate_expiring_in_30_days_raises_the_certificate_alert(tmp_path: Path,
                                                                               smtp: SmtpServer) -> None:
    stack = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        soon, _ = self_signed(tmp_path / "pins", "mio-next", days=30, ip=None)
        _instances(stack, mio_url=stack.mio.url, mio_keys=[stack.pin("mio-kz-35"), str(soon)])
        receiver = webhook_receiver(stack.gateway_url)
        stack.servers.append(receiver)
        _start(stack, tmp_path, _alerts_file(tmp_path, smtp, receiver))
        calls = wait_for(lambda: notified(receiver), timeout=30, what="the certificate webhook")
        (alert,) = calls[0]["alerts"]
        assert calls[0]["rule"] == "certificate_expiry"
        assert alert["subject"].startswith("pin:mio-kz-35:") and alert["severity"] == "warning"
        assert "expires" in alert["summary"]
        wait_for(lambda: _mail_rules(smtp) == ["[gateway] FIRING certificate_expiry: 1 alert, count 1"],
                 what="the certificate e-mail")

        # Only an administrator acknowledges, and only with the page's CSRF token.
        auditor = console_admin(stack.gateway_url, stack.auditor_token)
        assert auditor.get("/console/admin/alerts").status_code == 403
        admin = console_admin(stack.gateway_url, stack.admin_token)
        refused = admin.post(f"/console/admin/alerts/{alert['alert_id']}/acknowledge", data={})
        assert refused.status_code == 403
        assert f'data-alert="{alert["alert_id"]}" data-state="firing"' in admin.get("/console/admin/alerts").text
        assert admin.post("/console/admin/alerts/999999/acknowledge",
                          data={"csrf": _csrf(admin)}).status_code == 404
    finally:
        stack.close()


def test_an_alert_channel_that_cannot_be_reached_is_retried_and_shown(tmp_path: Path) -> None:
    stack = Stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    try:
        soon, _ = self_signed(tmp_path / "pins", "mio-next", days=30, ip=None)
        _instances(stack, mio_url=stack.mio.url, mio_keys=[stack.pin("mio-kz-35"), str(soon)])
        nowhere = bound_socket()  # nothing ever listens here
        smtp_nowhere = bound_socket()
        ca, _ = self_signed(tmp_path, "unused-ca", days=30)
        alerts = write_alerts(tmp_path / "alerts.yaml", channels=[
            webhook_channel(f"http://127.0.0.1:{nowhere.getsockname()[1]}"),
            email_channel(smtp_nowhere.getsockname()[1], ca.name)])
        _start(stack, tmp_path, alerts)
        admin = console_admin(stack.gateway_url, stack.admin_token)

        def channels() -> dict[str, tuple[str, int]]:
            html = admin.get("/console/admin/alerts").text
            return {m[0]: (m[1], int(m[2])) for m in re.findall(
                r'data-channel="([^"]+)" data-state="([^"]+)" data-attempts="(\d+)"', html)}

        seen = wait_for(lambda: (c := channels()) and all(n >= 3 for _, n in c.values()) and c, timeout=30,
                        what="both channels retried")
        # retried, never given up; an attempt may be under way at the moment the page is read
        assert seen["ops-webhook"][0] in ("pending", "in_flight") and seen["ops-mail"][0] in ("pending", "in_flight")
        html = admin.get("/console/admin/alerts").text
        assert "channel-error" in html and "ConnectionRefusedError" in html  # the e-mail's last error
        errors = re.findall(r'channel-error">([^<]*)<', html)
        assert any("Cannot connect" in e for e in errors), errors  # the webhook's last reason, from the outbox
        assert len(re.findall(r'class="next-try"', html)) >= 2, html[html.index('id="notifications"'):][:3000]
        dead_hooks = stack.admin.get("/v1/deliveries", params={"counterpart": "webhook"}).json()["items"]
        assert dead_hooks and dead_hooks[0]["state"] in ("pending", "in_flight") and dead_hooks[0]["attempts"] >= 3
        nowhere.close()
        smtp_nowhere.close()
    finally:
        stack.close()
