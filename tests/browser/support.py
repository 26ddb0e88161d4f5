"""Helpers for browser tests: a context that may reach one origin only, console errors, asyncio off the main thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from tests.harness import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

T = TypeVar("T")

# Not network requests: content the page already holds.
LOCAL_SCHEMES = ("data:", "blob:")


def isolated_context(browser: Browser, origin: str) -> tuple[BrowserContext, list[str]]:
    """A new context whose requests reach `origin` (scheme://host:port) only; the others are aborted and listed."""
    # A request the page's own CSP refuses never gets this far: Chromium logs it as a console error instead.
    prefix = origin.rstrip("/") + "/"
    elsewhere: list[str] = []

    def gate(route: Route) -> None:
        url = route.request.url
        if url.startswith(prefix) or url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort("blockedbyclient")

    context = browser.new_context()
    context.route("**/*", gate)
    return context, elsewhere


def collect_console_errors(page: Page) -> list[str]:
    """Every console message of type error and every uncaught exception the page has from now on."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    return errors


def run_in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a thread of its own, where asyncio.run() works while the browser holds the main loop."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="run_in_thread") as pool:
        return pool.submit(fn, *args, **kwargs).result()


def new_stack(tmp: Path) -> Stack:
    """A Stack on SQLite made in its own thread: Playwright's sync API keeps an event loop running in this one."""
    return run_in_thread(Stack, tmp, f"sqlite+aiosqlite:///{tmp / 'gateway.db'}")


def sign_in(page: Page, stack: Stack, token: str) -> None:
    """Through the form, as a person does; no page of the console opens without a session."""
    page.goto(f"{stack.gateway_url}/console/")
    assert "/console/sign-in" in page.url
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.gateway_url}/console/")


def script_errors(errors: list[str]) -> list[str]:
    """Console errors but the browser's note on a 4xx answer: the pages answer 403, 404 or 422 on purpose."""
    return [e for e in errors if "the server responded with a status of 4" not in e]


def shot(page: Page, name: str) -> None:
    """GATEWAY_CONSOLE_SCREENSHOTS=docs/console: the README's pictures, taken by the browser tests."""
    where = os.environ.get("GATEWAY_CONSOLE_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


@contextmanager
def signed_in_page(browser: Browser, stack: Stack, token: str, *, timeout_ms: int = 15_000
                   ) -> Iterator[tuple[Page, list[str], list[str]]]:
    """A signed-in page in a context that may reach the gateway's origin only: (page, elsewhere, errors)."""
    context, elsewhere = isolated_context(browser, stack.gateway_url)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    errors = collect_console_errors(page)
    sign_in(page, stack, token)
    try:
        yield page, elsewhere, errors
    finally:
        context.close()
