"""/docs and /redoc render every operation in a real browser with nothing fetched from another origin."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import httpx
import pytest

from tests.browser.support import collect_console_errors, isolated_context, new_stack
from tests.harness import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser

RENDER_TIMEOUT_MS = 30_000
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("docs")
    stack = new_stack(tmp)
    try:
        stack.start_gateway()
        yield stack
    finally:
        stack.close()


def operations(stack: Stack) -> list[tuple[str, str, dict[str, Any]]]:
    document = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=10).raise_for_status().json()
    return [(method.upper(), path, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS]


def test_the_pages_and_their_assets_need_no_credentials_and_name_no_other_origin(gateway: Stack) -> None:
    with httpx.Client(base_url=gateway.gateway_url, timeout=10) as anonymous:
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            response = anonymous.get(page)
            assert response.status_code == 200, page
            assert "script-src 'self';" in response.headers["content-security-policy"]
            html = response.text
            assert "<script>" not in html and "<style>" not in html  # nothing inline for the CSP to allow
            assert re.findall(r"(?i)(?:https?:)?//[^\s\"'<>]+", html) == [], page
            for asset in re.findall(r'(?:src|href)="(/[^"]+)"', html):
                assert anonymous.get(asset).status_code == 200, asset
        assert anonymous.get("/docs").text.count('data-openapi-url="/openapi.json"') == 1
        assert anonymous.get("/v1/deliveries").status_code == 401  # the API itself still wants credentials


def test_the_assets_exemption_reaches_nothing_but_the_assets(gateway: Stack) -> None:
    # A client that does not normalise dot segments (httpx would) sends the path as written.
    for target in ("/docs/assets/../../v1/deliveries", "/docs/assets/%2e%2e/%2e%2e/v1/deliveries",
                   "/docs/assets/../api/docs.py"):
        with socket.create_connection(("127.0.0.1", gateway.gateway_port), timeout=10) as conn:
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status = answer.split(b"\r\n", 1)[0]
        assert status.split()[1] == b"404", (target, status)


@pytest.mark.browser
def test_swagger_ui_renders_every_operation_from_the_gateway_alone(browser: Browser, gateway: Stack) -> None:
    from playwright.sync_api import expect

    ops = operations(gateway)
    context, elsewhere = isolated_context(browser, gateway.gateway_url)
    try:
        page = context.new_page()
        errors = collect_console_errors(page)
        assert page.goto(f"{gateway.gateway_url}/docs").status == 200
        expect(page.locator(".opblock")).to_have_count(len(ops), timeout=RENDER_TIMEOUT_MS)
        submit = page.locator('.opblock-post .opblock-summary-path[data-path="/v1/messages"]')
        expect(submit).to_have_count(1)
        submit.click()  # an opened operation draws more of the UI under the page's CSP (no inline styles)
        expect(page.get_by_role("button", name="Try it out")).to_be_visible()
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Probation exchange gateway")
    finally:
        context.close()
    assert elsewhere == []
    assert errors == []


@pytest.mark.browser
def test_redoc_renders_every_operation_from_the_gateway_alone(browser: Browser, gateway: Stack) -> None:
    from playwright.sync_api import expect

    ops = operations(gateway)
    summary = next(op["summary"] for method, path, op in ops if (method, path) == ("POST", "/v1/messages"))
    context, elsewhere = isolated_context(browser, gateway.gateway_url)
    try:
        page = context.new_page()
        errors = collect_console_errors(page)
        assert page.goto(f"{gateway.gateway_url}/redoc").status == 200
        expect(page.locator('[data-section-id^="operation/"]')).to_have_count(len(ops), timeout=RENDER_TIMEOUT_MS)
        expect(page.locator("h2", has_text=summary).first).to_be_visible()
        # The search index is built in a blob: worker; a result means the worker ran under the CSP.
        page.get_by_placeholder("Search...").fill("messages")
        expect(page.locator('[data-role="search:results"] li').first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    finally:
        context.close()
    assert elsewhere == []
    assert errors == []
