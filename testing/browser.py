"""Pytest plugin: headless system Chromium driven by Playwright, for the dashboard's browser tests.

Loaded once, by `tests/conftest.py` (`pytest_plugins`); no test module defines these again.
Playwright for Python drives the Chromium the machine already has (Debian's `chromium`, installed by
`scripts/setup.sh` where it can, or `CHROMIUM=/path/to/chrome`) through `executable_path`: it never
downloads a browser (`playwright install` needs the internet, which this machine does not have).

Fixtures: `browser` (one headless Chromium per test module), `page` (a fresh context and page per
test, closed after it) and `console_errors` (what that page reported with console.error, and its
uncaught errors: a test asserts the list is empty). Tests using them get the `browser` marker, so
`-m "not browser"` leaves them out.

Without a Chromium, or without the `playwright` package, those tests are skipped, never silently:
`tests/conftest.py` prints one line about it at the end of the run (`write_skip_summary`).

`browser` is module-scoped, not session-scoped: between two of its calls, Playwright's sync API
leaves its event loop marked as the thread's running loop, so `asyncio.run()` and
`loop.run_until_complete()` raise ("cannot be called from a running event loop") in every test that
runs after it in the same process, until Playwright stops. With `--dist loadfile` the next test
module on the worker may be one that needs asyncio: the browser stops with the module that used it.
Starting Playwright and Chromium costs about half a second a module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags for a closed network: no sandbox (the tests run as root in containers, where Chromium's
# sandbox cannot start), no GPU, and none of the background traffic (QUIC, component updates, sync,
# field trials) that only waits for the internet; /tmp instead of a possibly small /dev/shm.
# Headless comes from launch(headless=True).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

SKIP_PREFIX = "browser tests skipped"
SKIP_REASON = (
    f"{SKIP_PREFIX}: no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chromium)"
)
NO_PLAYWRIGHT_REASON = (
    f"{SKIP_PREFIX}: the playwright package is not installed (scripts/setup.sh, or "
    "pip install -r requirements-dev.txt)"
)

# A phone (iPhone 13/14 class): browser.new_context(**PHONE) or open_page(browser, **PHONE).
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}


def find_chromium() -> str | None:
    """`CHROMIUM` if it names an executable, else the first Chromium or Chrome on PATH, else None."""
    override = os.environ.get("CHROMIUM")
    if override:
        found = shutil.which(override)
        if found:
            return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright: Playwright, executable: str | None = None) -> Browser:
    """A headless Chromium: `executable`, else `find_chromium()`; never Playwright's own download."""
    path = executable or find_chromium()
    if path is None:
        raise RuntimeError(SKIP_REASON)
    return playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)


def record_console_errors(page: Page, errors: list[str] | None = None) -> list[str]:
    """Appends the page's console.error messages and uncaught errors to `errors` (a new list if None)."""
    found: list[str] = [] if errors is None else errors

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location
            found.append(f"console.error: {message.text} ({where['url']}:{where['line']})")

    def on_page_error(error: Error) -> None:
        found.append(f"pageerror: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return found


@contextmanager
def open_page(browser: Browser, errors: list[str] | None = None, **context: Any) -> Iterator[Page]:
    """A page in a new context (`context`: new_context's options, e.g. **PHONE), closed after."""
    ctx = browser.new_context(**context)
    try:
        page = ctx.new_page()
        record_console_errors(page, errors)
        yield page
    finally:
        ctx.close()


def skip_summary_lines(skipped: list[Any]) -> list[str]:
    """One line per distinct browser skip reason among skipped test reports, with its test count."""
    counts: dict[str, int] = {}
    for report in skipped:
        longrepr = getattr(report, "longrepr", None)
        text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        start = text.find(SKIP_PREFIX)
        if start >= 0:
            reason = text[start:].strip()
            counts[reason] = counts.get(reason, 0) + 1
    return [f"{reason} [{n} test{'s' if n > 1 else ''}]" for reason, n in counts.items()]


def write_skip_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The end-of-run line for `pytest_terminal_summary`: under xdist the controller prints it once."""
    if hasattr(terminalreporter.config, "workerinput"):
        return
    for line in skip_summary_lines(terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(line, yellow=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium through Playwright")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"browser", "page", "console_errors"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(NO_PLAYWRIGHT_REASON)
    executable = find_chromium()
    if executable is None:
        pytest.skip(SKIP_REASON)
    with sync_playwright() as playwright:
        chromium = launch(playwright, executable)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Filled by the `page` fixture: its console.error messages and uncaught errors."""
    return []


@pytest.fixture
def page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    with open_page(browser, console_errors) as new_page:
        yield new_page
