"""The alerts page in a real browser: an alert raised by the gateway is acknowledged from the page, and the
acknowledgement is an exchange-log record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.support import self_signed, write_alerts
from tests.browser.support import collect_console_errors, isolated_context, new_stack, shot, sign_in
from tests.harness import wait_for, write_counterparts

pytestmark = pytest.mark.browser




def test_an_admin_acknowledges_an_alert_from_the_page_and_it_is_audited(browser: Any, tmp_path: Path) -> None:
    stack = new_stack(tmp_path)
    try:
        soon, _ = self_signed(tmp_path / "pins", "mio-next", days=30, ip=None)  # a pin expiring in 30 days
        write_counterparts(stack.counterparts, [
            {"name": "probation", "counterpart": "probation", "base_url": stack.probation.url,
             "keys": [stack.pin("probation")]},
            {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-35"], "base_url": stack.mio.url,
             "keys": [stack.pin("mio-kz-35"), str(soon)]}])
        alerts = write_alerts(tmp_path / "alerts.yaml", channels=[], wait_s=0.2)
        stack.start_gateway(alerts_file=alerts, alert_check_interval_s=0.2, console_language="en")

        context, elsewhere = isolated_context(browser, stack.gateway_url)
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors = collect_console_errors(page)
        sign_in(page, stack, stack.admin_token)
        page.click("nav.main a[href$='/admin/alerts']")
        page.wait_for_url("**/console/admin/alerts")

        def firing() -> Any:
            row = page.locator("#open-alerts tr[data-rule='certificate_expiry'][data-state='firing']")
            if row.count():
                return row
            page.reload()
            return None

        row = wait_for(firing, what="the certificate alert on the page")
        alert_id = row.get_attribute("data-alert")
        assert "mio-kz-35" in row.inner_text() and "expires" in row.inner_text()
        page.click(f"#ack-{alert_id}")
        page.wait_for_url(f"**/console/admin/alerts?acknowledged={alert_id}*")
        acked = page.locator(f"#alert-{alert_id}")
        assert acked.get_attribute("data-state") == "acknowledged"
        assert "admin-1" in acked.inner_text() and page.locator("#ack-notice").is_visible()
        assert page.locator(f"#ack-{alert_id}").count() == 0  # nothing left to press
        shot(page, "admin-alerts")
        assert not elsewhere and not errors, (elsewhere, errors)
        context.close()

        records = stack.auditor.get("/v1/audit/exchanges", params={"kind": "admin"}).json()["items"]
        (record,) = [r for r in records if r["result"] == "acknowledged"]
        assert record["client"] == "admin-1" and record["peer"] == "alerts"
        assert f"alert {alert_id} acknowledged" in record["detail"]["error"]
        detail = stack.auditor.get(f"/v1/audit/exchanges/{record['seq']}", params={"reason": "alert audit"}).json()
        kept = json.loads(detail["request"]["content"])
        assert kept["action"] == "acknowledge" and kept["alert"]["rule"] == "certificate_expiry"
    finally:
        stack.close()
