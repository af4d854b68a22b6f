"""The admin dashboard in real headless Chromium (Debian's package, driven by Playwright).

Screenshots land in tests/artifacts/. There is no skip: without Chromium this fails.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from django_streamer.testing import fetch

from .conftest import Server, make_database, start_gunicorn, stop_gunicorn

pytestmark = [pytest.mark.server, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    db = make_database(tmp_path)
    srv = start_gunicorn(tmp_path, "gthread", workers=2, env={"STREAMER_TEST_DB": str(db)})
    yield srv
    stop_gunicorn(srv)


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1100})
        finally:
            browser.close()


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_the_dashboard_updates_live_while_a_stream_runs(server: Server, page: Page):
    base = f"http://{server.host}:{server.port}"
    log_in(page, base)
    # Reachable from the admin index.
    page.click("a[href='/admin/streaming/']")
    page.wait_for_url(f"{base}/admin/streaming/")
    # ... and from the nav sidebar of any admin page.
    assert page.locator("#nav-sidebar a[href='/admin/streaming/']").count() >= 1

    tag = "live-" + uuid.uuid4().hex[:6]
    done = threading.Event()

    def slow_stream() -> None:
        fetch(
            server.host,
            server.port,
            f"/stream/?kind=sync&items=80&delay=0.1&flush=0&tag={tag}",
            timeout=30,
        )
        done.set()

    threading.Thread(target=slow_stream, daemon=True).start()
    bytes_cell = page.locator(f"td[data-stream='{tag}'][data-figure='bytes']")
    bytes_cell.wait_for(timeout=10_000)
    first = bytes_cell.inner_text()
    page.wait_for_function(
        """([tag, first]) => {
            const cell = document.querySelector(`td[data-stream='${tag}'][data-figure='bytes']`);
            return cell && cell.textContent !== first;
        }""",
        arg=[tag, first],
        timeout=10_000,
    )
    assert bytes_cell.inner_text() != first
    # The stream shows among the active ones, with the path it was asked on.
    assert page.locator("#streamer-active td", has_text="/stream/").count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    done.wait(30)
    page.wait_for_function(
        """(tag) => {
            const selector = `td[data-stream='${tag}'][data-figure='completed']`;
            const cell = document.querySelector(selector);
            return cell && cell.textContent === "1";
        }""",
        arg=tag,
        timeout=10_000,
    )
    assert page.locator(f"td[data-stream='{tag}'][data-figure='bytes']").inner_text() == "2.6 KiB"


def test_dark_mode_follows_the_admin(server: Server, page: Page):
    base = f"http://{server.host}:{server.port}"
    log_in(page, base)
    backgrounds = {}
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(f"{base}/admin/streaming/")
        page.locator("#streamer-streams").wait_for()
        backgrounds[scheme] = page.evaluate(
            "getComputedStyle(document.querySelector('.streamer-chart')).backgroundColor"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{scheme}.png"), full_page=True)
    assert backgrounds["light"] != backgrounds["dark"]
