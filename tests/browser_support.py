"""Browser test support: a real headless browser, Debian's chromium driven by Playwright (no browser download).

Without chromium (or Playwright) the tests are skipped, or failed when RESILIENT_REQUIRE_BROWSER_TESTS=1
(CI sets it, and installs chromium with .ci/setup-browser first). Test modules import the fixtures:
`from browser_support import browser_fixture, page_of_fixture`. Every page fails its test on a script error."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

REQUIRE_ENV = "RESILIENT_REQUIRE_BROWSER_TESTS"
CHROMIUM = os.environ.get("RESILIENT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the browser tests cannot run: {reason} (run .ci/setup-browser)")
    pytest.skip(f"browser tests cannot run: {reason}")


@pytest.fixture(scope="module", name="browser")  # closed with its module: no browser outlives its tests
def browser_fixture() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"Playwright is not installed ({exc})")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(name="page_of")
def page_of_fixture(browser: Any) -> Iterator[Any]:
    """New pages, each in a context of its own (its own storage: a token entered in one is not in another)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def new_page() -> Any:
        contexts.append(browser.new_context(viewport={"width": 1280, "height": 900}))
        page = contexts[-1].new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield new_page
    for context in contexts:
        context.close()
    assert not errors, f"script errors on the page: {errors}"
