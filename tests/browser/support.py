"""Helpers for browser tests: a context that may reach one origin only, console errors, asyncio off the main thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, TypeVar

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
