"""Fixtures for browser tests: Debian's Chromium driven by Playwright (skipped where missing, mandatory in CI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")


def _unavailable(why: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (browser tests are mandatory in CI)")
    pytest.skip(why)


# One browser for every test in tests/browser, closed before the rest of the suite runs: while Playwright's sync
# API is open, the main thread's event loop is Playwright's and counts as running, so asyncio.run() and every
# pytest-asyncio test there would fail. For the same reason the browser tests build what needs asyncio (a Stack,
# say) through support.run_in_thread.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """A Playwright sync Browser; Debian's build, because Playwright's own download needs the internet."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed ({exc}); pip install -e '.[test]'")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found; apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()
