"""The browser harness itself (testing/browser.py): headless system Chromium really drives a page.

A tiny page served on 127.0.0.1 by http.server: a button that changes a text, a console.error when
`?fail` is in the URL, an uncaught error when `?throw` is. No app code: the dashboard's own tests
build on these fixtures.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from testing.browser import PHONE, open_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>harness</title>
<link rel="icon" href="data:,">
<style>body { margin: 0; font: 16px sans-serif } button { display: block; width: 100% }</style>
</head>
<body>
<h1>Harness</h1>
<button id="go" type="button">Start</button>
<p id="status">idle</p>
<script>
  document.getElementById("go").addEventListener("click", () => {
    document.getElementById("status").textContent = "started";
  });
  const query = new URLSearchParams(location.search);
  if (query.has("fail")) console.error("harness: fail flag set");
  if (query.has("throw")) throw new Error("harness: throw flag set");
</script>
</body>
</html>
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/":
            self.send_error(404)
            return
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE), png[:16]
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_click_changes_the_text_without_console_errors(page: Page, console_errors: list[str], site: str):
    page.goto(site)
    assert page.title() == "harness"
    page.get_by_role("button", name="Start").click()
    page.locator("#status", has_text="started").wait_for(timeout=5_000)
    assert console_errors == []


def test_screenshot_is_a_png_of_the_viewport(page: Page, site: str):
    page.goto(site)
    assert png_size(page.screenshot()) == (1280, 720)  # Playwright's default viewport


def test_console_errors_and_uncaught_errors_are_recorded(page: Page, console_errors: list[str], site: str):
    page.goto(f"{site}?fail=1&throw=1")
    page.wait_for_function("document.readyState === 'complete'")
    assert len(console_errors) == 2, console_errors
    assert console_errors[0].startswith("console.error: harness: fail flag set ("), console_errors
    assert console_errors[1] == "pageerror: harness: throw flag set", console_errors


def test_phone_viewport(browser: Browser, site: str):
    errors: list[str] = []
    with open_page(browser, errors, **PHONE) as phone:
        phone.goto(site)
        assert phone.evaluate("[innerWidth, innerHeight]") == [390, 844]
        box = phone.locator("#go").bounding_box()
        assert box is not None and box["width"] == 390  # the full-width button fits the screen
        phone.locator("#go").tap()
        phone.locator("#status", has_text="started").wait_for(timeout=5_000)
        assert png_size(phone.screenshot()) == (390 * 3, 844 * 3)  # device_scale_factor 3
    assert errors == []
