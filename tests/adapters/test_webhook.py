"""Alert webhook codec: golden encode of a grouped notification; nothing decodes back into the pipeline."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.webhook.codec import WebhookAdapter
from gateway.alerts.email import render
from gateway.canonical.errors import WireDecodeError
from gateway.canonical.messages import parse_message
from gateway.config import ROOT
from gateway.mapping import EmailChannel, WebhookChannel, load_mappings
from gateway.pipeline.ports import DecodeContext, EncodeContext, WireRequest, WireResponse
from tests.adapters.golden_support import check_golden

MAPPINGS = load_mappings(ROOT / "gateway" / "mappings")
CHANNEL = WebhookChannel(name="ops-webhook", type="webhook", url="https://ops.example.kz/hooks/gateway")
NOW = datetime(2026, 12, 3, 4, 20, tzinfo=timezone.utc)
NOTIFICATION = parse_message({
    "message_id": "3b0c1a4e-9f57-4c2e-a3c5-0d7f1e2b6a90", "type": "alert.notification",
    "case_id": "gateway-alerts", "occurred_at": "2026-12-03T04:20:00Z",
    "body": {"rule": "dead_letter", "channels": ["ops-webhook"], "count": 503, "alerts": [
        {"alert_id": 7, "subject": "mio-kz-35", "state": "firing", "severity": "critical",
         "summary": "mio-kz-35: deliveries dead-lettered, a person must look at them", "count": 500,
         "started_at": "2026-12-03T04:18:00Z"},
        {"alert_id": 5, "subject": "health", "state": "resolved", "severity": "critical",
         "summary": "health: deliveries dead-lettered, a person must look at them", "count": 3,
         "started_at": "2026-12-03T03:00:00Z", "resolved_at": "2026-12-03T04:19:00Z"}]},
})


def test_a_notification_is_one_json_post_to_the_channel_url() -> None:
    wire = WebhookAdapter().encode(NOTIFICATION, mappings=MAPPINGS, instance=CHANNEL.instance(),
                                   context=EncodeContext(now=NOW))
    assert (wire.method, wire.path) == ("POST", "")  # the channel's URL is the whole target
    assert wire.header("content-type") == "application/json"
    assert wire.header("x-message-id") == "3b0c1a4e-9f57-4c2e-a3c5-0d7f1e2b6a90"
    check_golden("webhook", "notification.json", wire.body)
    assert CHANNEL.instance().url == "https://ops.example.kz/hooks/gateway"


def test_only_notifications_are_encoded_and_nothing_comes_back() -> None:
    adapter = WebhookAdapter()
    other = parse_message({"message_id": "3b0c1a4e-9f57-4c2e-a3c5-0d7f1e2b6a91", "type": "plan.approved",
                           "case_id": "C-1", "occurred_at": "2026-12-03T04:20:00Z", "body": {"plan_id": "P-1"}})
    with pytest.raises(WireDecodeError):
        adapter.encode(other, mappings=MAPPINGS, instance=CHANNEL.instance(), context=EncodeContext(now=NOW))
    assert adapter.decode_response(WireResponse(200, (), b"{}"), mappings=MAPPINGS, request=NOTIFICATION,
                                   context=DecodeContext(received_at=NOW)) == []
    with pytest.raises(WireDecodeError):
        adapter.decode_callback(WireRequest("POST", "/", (), b"{}"), mappings=MAPPINGS,
                                context=DecodeContext(received_at=NOW))


def test_the_e_mail_says_rule_states_and_count() -> None:
    channel = EmailChannel(name="ops-mail", type="email", host="smtp.example.kz", sender="gw@example.kz",
                           to=("duty@example.kz", "lead@example.kz"))
    mail = render(NOTIFICATION, channel=channel, console_url="https://gw.example.kz/console/admin/alerts")
    assert mail["Subject"] == "[gateway] FIRING/RESOLVED dead_letter: 2 alerts, count 503"
    assert mail["To"] == "duty@example.kz, lead@example.kz"
    text = mail.get_content()
    assert "FIRING [critical] mio-kz-35" in text and "RESOLVED [critical] health" in text
    assert "https://gw.example.kz/console/admin/alerts" in text
