"""The administrator's pages refuse bad input with a message in the page's language and change nothing."""

from __future__ import annotations

import re

import httpx

from tests.harness import Stack, sim_config, wait_for
from tests.integration.test_admin import _case_and_referral, _status
from tests.integration.test_console_sessions import _sign_in


def _csrf(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_bad_input_on_admin_pages_changes_nothing(stack: Stack) -> None:
    stack.start_gateway()
    with httpx.Client(base_url=stack.gateway_url) as client:
        assert _sign_in(client, stack.admin_token).status_code == 303
        client.cookies.set("gw_lang", "ru", path="/console")
        r = client.get("/console/admin/counterparts/no-such-instance")
        assert r.status_code == 404 and "no-such-instance" in r.text and 'lang="ru"' in r.text

        page = client.get("/console/admin/counterparts/mio-kz-35")
        before = stack.admin.get("/v1/admin/counterparts/mio-kz-35").json()
        fields = dict(re.findall(r'<input id="f-([^"]+)" name="[^"]+" value="([^"]*)"', page.text))
        fields.update(enabled="true", log_bodies="true", require_signatures="true", role="service",
                      keys=before["keys"][0], revoked_keys="")
        for change, field in (({"timeout_s": "быстро"}, "timeout_s"), ({"max_in_flight": "0"}, "max_in_flight"),
                              ({"base_url": "not a url"}, "base_url")):
            r = client.post("/console/admin/counterparts/mio-kz-35",
                            data={**fields, **change, "csrf": _csrf(page), "action": "apply"})
            assert r.status_code == 422, (change, r.status_code)
            error = re.search(rf'id="f-{re.escape(field)}"[^>]*>.*?field-error" role="alert">([^<]+)<', r.text, re.S)
            assert error, (change, "no error next to the field")
            assert f'value="{change[field]}"' in r.text  # the form keeps what was typed
        assert stack.admin.get("/v1/admin/counterparts/mio-kz-35").json() == before  # all or nothing
        # Apply carries what its dry run showed; other values (or a configuration changed meanwhile) are refused.
        dry = client.post("/console/admin/counterparts/mio-kz-35",
                          data={**fields, "timeout_s": "6", "csrf": _csrf(page), "action": "dry-run"})
        checked = re.search(r'name="checked" value="([^"]+)"', dry.text).group(1)
        r = client.post("/console/admin/counterparts/mio-kz-35",
                        data={**fields, "timeout_s": "8", "csrf": _csrf(page), "action": "apply", "checked": checked})
        assert r.status_code == 409 and 'id="dry-run"' in r.text
        assert stack.admin.get("/v1/admin/counterparts/mio-kz-35").json() == before

        r = client.post("/console/admin/dead-letters/replay", data={"csrf": _csrf(page), "scope": "selected"})
        assert r.status_code == 422 and 'id="notice"' in r.text  # nothing selected: said, nothing replayed

        sim_config(stack.mio, per_message=[400], callbacks=False)
        referral = _case_and_referral(stack, seed=21)
        wait_for(lambda: _status(stack, referral["message_id"])["status"] == "dead_letter", what="dead letter")
        dead = next(d for d in stack.admin.get("/v1/admin/dead-letters").json()["items"]
                    if d["message_id"] == referral["message_id"])
        listed = client.get("/console/admin/dead-letters", params={"reason_class": "http"})
        assert f'data-id="{dead["id"]}"' in listed.text and '<option value="http"' in listed.text
        none = client.get("/console/admin/dead-letters", params={"reason_class": "refused"})
        assert 'data-id="' not in none.text  # a class is a prefix before the colon, not any first word
        assert client.post("/console/admin/dead-letters/replay",
                           data={"csrf": _csrf(page), "scope": "selected", "id": str(dead["id"])}).status_code == 200
        wait_for(lambda: _status(stack, referral["message_id"])["status"] == "delivered", what="delivered")
        again = client.post("/console/admin/dead-letters/replay",
                            data={"csrf": _csrf(page), "scope": "selected", "id": str(dead["id"])})
        assert again.status_code == 409  # not dead-lettered any more: nothing replayed, said on the page
        replays = [r for r in stack.auditor.get("/v1/audit/exchanges", params={"kind": "admin"}).json()["items"]
                   if r["result"] == "replayed"]
        assert len(replays) == 1
        no_confirm = client.post("/console/admin/keys/rotate", data={"csrf": _csrf(page), "channel": "json"})
        assert no_confirm.status_code == 404 and "text/html" in no_confirm.headers["content-type"]  # no key store here
