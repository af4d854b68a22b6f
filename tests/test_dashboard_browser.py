"""The admin dashboard in real headless Chromium (Debian's package, driven by Playwright).

Screenshots land in tests/artifacts/. There is no skip: without Chromium this fails.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from django_streamer.core.metrics import Store, StreamMetrics
from django_streamer.core.recorder import Outcome
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


def slow_streams(server: Server, tags: list[str], *, items: int = 60) -> list[threading.Thread]:
    """Start one slow stream per tag (0.1 s between items) in the background."""
    threads = []
    for tag in tags:
        path = f"/stream/?kind=sync&items={items}&delay=0.1&flush=0&tag={tag}"
        t = threading.Thread(
            target=fetch, args=(server.host, server.port, path), kwargs={"timeout": 30}, daemon=True
        )
        t.start()
        threads.append(t)
    return threads


def quick_streams(server: Server, tags: list[str]) -> None:
    for tag in tags:
        assert fetch(server.host, server.port, f"/stream/?kind=sync&items=5&tag={tag}").complete


def overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0 when it fits)."""
    return int(page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth"))


def luminance(colour: str) -> float:
    channels = []
    for i in (1, 3, 5):
        c = int(colour[i : i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = channels
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def rgb_to_hex(css: str) -> str:
    r, g, b = (int(float(v)) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


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


def test_no_horizontal_overflow_and_readable_distinct_lines(server: Server, page: Page):
    base = f"http://{server.host}:{server.port}"
    run = uuid.uuid4().hex[:4]
    # Long names and more streams than the chart draws by name.
    quick_streams(server, [f"export-{run}-{i}-with-a-rather-long-stream-name" for i in range(7)])
    busy = [f"busy-{run}-{i}" for i in range(3)]
    threads = slow_streams(server, busy, items=200)  # 20 s: longer than the loop below
    log_in(page, base)
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (1400, 1280, 420):
        page.set_viewport_size({"width": width, "height": 1000})
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.goto(f"{base}/admin/streaming/")
            page.wait_for_function(
                "(busy) => { const d = window.streamerDashboard && window.streamerDashboard.last();"
                " return d && busy.every(n => (d.streams[n] || {}).bytes_per_second > 0); }",
                arg=busy,
                timeout=10_000,
            )
            page.wait_for_timeout(1500)  # a second point on the chart
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}-{scheme}.png"), full_page=True)
            assert overflow(page) <= 0, (width, scheme)
            # The header bar spans the content.
            header = page.evaluate(
                "document.getElementById('header').getBoundingClientRect().width"
            )
            assert header >= page.evaluate("window.innerWidth") - 1
            colours = page.eval_on_selector_all(
                "#streamer-legend span",
                "spans => spans.map(s => [s.dataset.series, s.dataset.colour])",
            )
            names = [n for n, _ in colours]
            assert len(colours) == 7 and names[-1] == "other (4)", names
            assert len({c for _, c in colours}) == len(colours), colours  # distinct
            background = rgb_to_hex(
                page.evaluate(
                    "getComputedStyle(document.querySelector('.streamer-chart')).backgroundColor"
                )
            )
            for name, colour in colours:
                # WCAG's 3:1 for graphics against the chart's own background.
                assert contrast(colour, background) >= 3, (scheme, name, colour, background)
    for t in threads:
        t.join(30)


def test_throughput_now_agrees_between_json_table_and_chart(server: Server, page: Page):
    base = f"http://{server.host}:{server.port}"
    run = uuid.uuid4().hex[:4]
    idle = f"idle-{run}"
    quick_streams(server, [idle])
    busy = f"busy-{run}"
    threads = slow_streams(server, [busy], items=40)
    log_in(page, base)
    page.goto(f"{base}/admin/streaming/")
    page.wait_for_function(
        "(n) => { const d = window.streamerDashboard.last();"
        " return d && d.streams[n] && d.streams[n].bytes_per_second > 0; }",
        arg=busy,
        timeout=10_000,
    )
    seen = page.evaluate(
        """([busy, idle]) => {
            const d = window.streamerDashboard.last();
            const cell = n => document.querySelector(
                `td[data-stream='${n}'][data-figure='throughput']`);
            const drawn = Object.fromEntries(window.streamerDashboard.series().map(
                s => [s.name, s.points[s.points.length - 1].v]));
            return Object.fromEntries([busy, idle].map(n => [n, {
                json: d.streams[n].bytes_per_second, active: d.streams[n].active,
                table: Number(cell(n).dataset.value), text: cell(n).textContent,
                chart: drawn[n]}]));
        }""",
        [busy, idle],
    )
    assert seen[busy]["json"] > 0 and seen[busy]["active"] == 1
    assert seen[busy]["table"] == seen[busy]["json"] == seen[busy]["chart"]
    # A stream with nothing active reads 0 everywhere.
    assert seen[idle]["active"] == 0
    assert seen[idle]["json"] == seen[idle]["table"] == seen[idle]["chart"] == 0
    assert seen[idle]["text"] == "0 B/s"
    for t in threads:
        t.join(30)


def record_from_another_process(directory: Path, tag: str) -> tuple[int, int, int]:
    """Figures the workers cannot make yet, written as another process on the host would.

    A forked child: one compressed stream drained (10 000 source bytes as
    1 000 on the wire), one still active that the active-streams table has
    no room for (max_active=0), and one store failure. The child then waits
    to be killed. Returns its pid and the pipe's two ends.
    """
    ready, done = os.pipe()
    pid = os.fork()
    if pid == 0:
        store = Store(str(directory), max_active=0)
        rec = StreamMetrics(store, tag, "/z")
        rec.start()
        rec.uncompressed(10_000)
        rec.chunk(1_000)
        rec.finish(Outcome.DRAINED)
        StreamMetrics(store, tag, "/held").start()
        store.report("a test failure", OSError("disk on fire"))
        os.write(done, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(ready, 1)
    return pid, ready, done


def test_the_dashboard_shows_drained_lost_compression_hidden_and_store_errors(
    server: Server, page: Page
):
    base = f"http://{server.host}:{server.port}"
    run = uuid.uuid4().hex[:4]
    plain, zipped = f"plain-{run}", f"zipped-{run}"
    quick_streams(server, [plain])
    pid, ready, done = record_from_another_process(
        server.events_path.parent / f"metrics-{server.port}", zipped
    )
    log_in(page, base)
    page.goto(f"{base}/admin/streaming/")

    def figure(stream: str, name: str) -> str:
        locator = page.locator(f"td[data-stream='{stream}'][data-figure='{name}']")
        locator.wait_for(timeout=10_000)
        return locator.inner_text()

    try:
        assert figure(zipped, "drained") == "1" and figure(zipped, "active") == "1"
        assert figure(zipped, "compression_ratio") == "10.00\u00d7"
        assert figure(plain, "compression_ratio") == "\u2014"  # nothing compressed
        assert figure(plain, "completed") == "1" and figure(plain, "drained") == "0"
        hidden = page.locator("#streamer-active-hidden")
        hidden.wait_for(state="visible", timeout=10_000)
        assert hidden.inner_text().startswith("1 more active stream not shown")
        errors = page.locator("#streamer-store-errors")
        assert errors.is_visible() and errors.locator("[data-figure]").inner_text() == "1"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-new-figures.png"), full_page=True)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready)
        os.close(done)
    # Its held stream is now lost, the unlisted one gone with it: the page says so.
    page.wait_for_function(
        """(tag) => {
            const cell = document.querySelector(`td[data-stream='${tag}'][data-figure='lost']`);
            return cell && cell.textContent === "1";
        }""",
        arg=zipped,
        timeout=10_000,
    )
    assert figure(zipped, "active") == "0" and figure(zipped, "started") == "2"
    assert page.locator("#streamer-active-hidden").is_hidden()
    # The failure it counted stays counted (folded into the archive).
    assert page.locator("#streamer-store-errors [data-figure]").inner_text() == "1"


def test_the_limits_table_shows_the_limit_per_key_and_the_busiest_key(server: Server, page: Page):
    # Issue 19: "In use 4, Limit 2" read as over-admission; the page says the
    # limit is per key and shows what the busiest key holds, host-wide.
    threads = []
    for _ in range(2):
        path = "/limited/reject/?kind=sync&items=60&delay=0.1&flush=0"
        t = threading.Thread(
            target=fetch, args=(server.host, server.port, path), kwargs={"timeout": 30}, daemon=True
        )
        t.start()
        threads.append(t)
    base = f"http://{server.host}:{server.port}"
    log_in(page, base)
    page.goto(f"{base}/admin/streaming/")
    page.wait_for_function(
        "document.querySelector(\"[data-pool='e2e-reject'][data-figure='busiest_key']\")"
        "?.textContent === '2'",
        timeout=10_000,
    )
    headers = page.locator("#streamer-pools thead th").all_text_contents()
    assert headers[1:4] == ["In use (all keys)", "Busiest key", "Limit per key"]
    for t in threads:
        t.join(30)
    page.wait_for_function(
        "document.querySelector(\"[data-pool='e2e-reject'][data-figure='busiest_key']\")"
        "?.textContent === '0'",
        timeout=10_000,
    )
