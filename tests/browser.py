"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright
(never ``playwright install``: no browser is downloaded), and screenshots of every open page
when a test fails, in the test's output folder (``build/test-results/<test>/``).

Without Chromium or the ``playwright`` package the browser tests are skipped, saying why,
except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = ROOT / "build" / "test-results"


def require_browser() -> None:
    """Skip (or, in CI, fail) when Chromium or Playwright is missing, saying which."""
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright Python package is not installed (make setup-test)"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"Chromium is not installed at {CHROMIUM} (run `scripts/setup.sh browser`)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {problem}")
        print(f"browser tests skipped: {problem}")
        pytest.skip(f"browser tests skipped: {problem}")


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (a Playwright ``Browser``), closed on exit."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def output_dir(request) -> Path:
    """The output folder of the running test: ``build/test-results/<module>-<test>/``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.nodeid.replace("tests/", "")).strip("-")
    return RESULTS / name


@contextlib.contextmanager
def screenshots_on_failure(context, folder: Path) -> Iterator[None]:
    """On a failure inside the block, save a full-page screenshot of every page of the
    Playwright ``context`` into ``folder``, say where, and let the failure go on."""
    try:
        yield
    except BaseException as failure:
        if isinstance(failure, pytest.skip.Exception):
            raise
        folder.mkdir(parents=True, exist_ok=True)
        for number, page in enumerate(context.pages, 1):
            with contextlib.suppress(Exception):  # a crashed page must not hide the failure
                page.screenshot(path=str(folder / f"failure-{number}.png"), full_page=True)
        print(f"screenshots of the failure: {folder}")
        raise
