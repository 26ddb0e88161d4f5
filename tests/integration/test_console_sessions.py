"""Console sessions over HTTP: cookie flags, throttled and logged failed sign-ins, expiry, processes sharing them."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from gateway.console.sessions import ConsoleSessions, FailureThrottle, SignInRefused
from gateway.storage.clients import ClientRow
from gateway.storage.sessions import SessionRow
from tests.harness import Stack, free_port


def _csrf(client: httpx.Client) -> str:
    page = client.get("/console/sign-in")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _sign_in(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/console/sign-in", data={"token": token, "csrf": _csrf(client), "next": "/console/"})


def test_cookie_flags_secure_under_https_and_security_headers(stack: Stack) -> None:
    # The public URL is what browsers use: behind a TLS terminator the cookie must be Secure.
    stack.start_gateway(public_url=stack.gateway_url.replace("http://", "https://"))
    with httpx.Client(base_url=stack.gateway_url) as client:
        form = client.get("/console/sign-in")
        assert "Secure" in form.headers["set-cookie"]  # even the sign-in form's token cookie
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        # httpx, like a browser, keeps a Secure cookie off plain HTTP: hand it over as the browser would on TLS.
        r = client.post("/console/sign-in", data={"token": stack.auditor_token, "csrf": csrf},
                        headers={"Cookie": f"gw_csrf={csrf}"})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie and "Path=/console" in cookie
        page = client.get("/console/sign-in")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        assert stack.auditor_token not in page.text


def test_failed_sign_ins_are_throttled_and_logged(stack: Stack) -> None:
    stack.start_gateway(console_sign_in_limit=3)
    with httpx.Client(base_url=stack.gateway_url) as client:
        codes = [_sign_in(client, f"pgw_wrong-{i}").status_code for i in range(6)]
        assert codes == [401, 401, 401, 429, 429, 429]
        no_csrf = client.post("/console/sign-in", data={"token": "pgw_wrong"})
        assert no_csrf.status_code == 429  # a form without its token counts as a failure too
        # The right token still signs in: a neighbour behind the same address cannot lock anyone out.
        assert _sign_in(client, stack.auditor_token).status_code == 303
    refused = stack.auditor.get("/v1/audit/exchanges", params={"kind": "refused"}).json()["items"]
    reasons = [r["detail"]["error"].split(";")[0] for r in refused if "/console/sign-in" in r["detail"]["error"]]
    # Within the limit each failure is a record; past it one record says so and the rest are only refused.
    assert reasons.count("console-sign-in-failed") == 3 and reasons.count("console-sign-in-throttled") == 1
    assert len(reasons) == 4
    assert all("pgw_wrong" not in str(r) for r in refused)  # the typed token is never kept


def test_bad_input_is_a_page_in_the_persons_language(stack: Stack) -> None:
    stack.start_gateway()
    with httpx.Client(base_url=stack.gateway_url) as client:
        assert _sign_in(client, stack.auditor_token).status_code == 303
        client.cookies.set("gw_lang", "en", path="/console")
        r = client.get("/console/audit/exchanges", params={"status_code": "abc", "since": "yesterday"})
        assert r.status_code == 422 and "text/html" in r.headers["content-type"]
        assert "An HTTP status is a number from 100 to 599." in r.text and 'value="abc"' in r.text
        r = client.get("/console/audit/exchanges", params={"iin": "880205434760"})
        assert r.status_code == 422 and "880205434760" not in r.text  # an IIN in a link is dropped, not searched
        r = client.get("/console/audit/exchanges", params={"since": "0001-01-01T00:00"})
        assert r.status_code == 422 and "Traceback" not in r.text  # a year out of range is a field error
        lookup = client.get("/console/audit/cases")
        r = client.post("/console/audit/cases", data={"csrf": _csrf_of(lookup), "case_id": "880205434760"},
                        follow_redirects=False)
        assert r.status_code == 422 and "880205434760" not in r.text  # an IIN is not put in a case URL
        r = client.post("/console/audit/cases", data={"csrf": _csrf_of(lookup), "case_id": "35-2026-1"},
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/audit/cases/35-2026-1"
        r = client.get("/console/audit/cases/NO-SUCH-CASE")
        assert r.status_code == 404 and "No case NO-SUCH-CASE is known to the gateway." in r.text
        r = client.get("/console/audit/exchanges/99999999")
        assert r.status_code == 200  # the reason is asked first; the record is looked up only with it
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
        r = client.post("/console/audit/exchanges/99999999", data={"csrf": csrf, "reason": "audit"})
        assert r.status_code == 404 and "Traceback" not in r.text
        r = client.post("/console/audit/export", data={"csrf": csrf, "format": "chain", "case_id": "X",
                                                       "reason": ""})
        assert r.status_code == 422 and 'value="X"' in r.text
        assert "A chain file is always the whole log" in r.text and "Give a reason" in r.text
    before = stack.auditor.get("/v1/audit/exchanges", params={"kind": "audit-export"}).json()["items"]
    assert before == []  # a refused export logs nothing and sends nothing


def test_console_switched_off(stack: Stack) -> None:
    stack.start_gateway(console=False)
    for path in ("/console/", "/console/sign-in", "/console/static/console.css"):
        r = httpx.get(f"{stack.gateway_url}{path}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", path


@pytest.mark.postgres
def test_a_session_is_shared_by_every_process_on_postgres(tmp_path, postgres_url: str) -> None:  # noqa: ANN001
    stack = Stack(tmp_path, postgres_url)
    ports = [free_port(), free_port()]
    procs = [stack.spawn_gateway(port) for port in ports]
    try:
        first, second = (httpx.Client(base_url=f"http://127.0.0.1:{p}") for p in ports)
        assert _sign_in(first, stack.auditor_token).status_code == 303
        cookie = first.cookies.get("gw_session")
        second.cookies.set("gw_session", cookie, path="/console")
        assert second.get("/console/audit/exchanges").status_code == 200
        page = first.get("/console/audit/exchanges")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert first.post("/console/sign-out", data={"csrf": csrf}).status_code == 303
        assert second.get("/console/audit/exchanges").status_code == 303  # signed out everywhere
        first.close()
        second.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        stack.close()


# ---- session rules on fakes, with the clock injected -------------------------------------------------


class FakeSessions:
    def __init__(self) -> None:
        self.rows: dict[str, SessionRow] = {}

    async def create(self, row: SessionRow) -> None:
        self.rows[row.id_hash] = row

    async def get(self, id_hash: str) -> SessionRow | None:
        return self.rows.get(id_hash)

    async def touch(self, *, id_hash: str, at: datetime) -> None:
        self.rows[id_hash] = replace(self.rows[id_hash], last_seen_at=at)

    async def end(self, *, id_hash: str, at: datetime) -> None:
        self.rows[id_hash] = replace(self.rows[id_hash], ended_at=at)


class FakeDirectory:
    def __init__(self, row: ClientRow) -> None:
        self.row = row

    async def by_token_hash(self, digest: str):  # noqa: ANN201
        return type("Entry", (), {"row": self.row})() if digest == self.row.token_hash else None

    async def by_client_id(self, client_id: str) -> ClientRow | None:
        return self.row if client_id == self.row.client_id else None

    def note_use(self, client_id: str, at: datetime) -> None:
        self.used = (client_id, at)


class FakeEvents:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def refused(self, **kw: object) -> None:
        self.reasons.append(str(kw["reason"]))


async def test_idle_and_absolute_expiry_and_revocation_end_a_session() -> None:
    from security.access import token_hash

    now = [datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)]
    row = ClientRow("auditor-1", frozenset({"auditor"}), None, None, token_hash("pgw_t"), None, now[0], None)
    events = FakeEvents()
    sessions = ConsoleSessions(sessions=FakeSessions(), directory=FakeDirectory(row), events=events,  # type: ignore[arg-type]
                               clock=lambda: now[0], idle=timedelta(minutes=30), lifetime=timedelta(hours=8),
                               throttle=FailureThrottle(limit=5, window_s=300))
    cookie, _ = await sessions.sign_in(token="pgw_t", source="10.0.0.1", path="/console/sign-in")
    for _ in range(20):  # used every 25 minutes: idle never reached, but the absolute expiry is
        now[0] += timedelta(minutes=25)
        if await sessions.resolve(cookie) is None:
            break
    assert now[0] - datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc) >= timedelta(hours=8)

    cookie, _ = await sessions.sign_in(token="pgw_t", source="10.0.0.1", path="/console/sign-in")
    now[0] += timedelta(minutes=29)
    assert await sessions.resolve(cookie) is not None
    now[0] += timedelta(minutes=31)  # idle since the last use
    assert await sessions.resolve(cookie) is None

    cookie, _ = await sessions.sign_in(token="pgw_t", source="10.0.0.1", path="/console/sign-in")
    sessions.directory.row = replace(row, revoked_at=now[0])  # type: ignore[attr-defined]
    assert await sessions.resolve(cookie) is None  # a revoked person's session ends with the client
    with pytest.raises(SignInRefused):
        await sessions.sign_in(token="pgw_t", source="10.0.0.1", path="/console/sign-in")
    assert events.reasons == ["revoked-client"]
