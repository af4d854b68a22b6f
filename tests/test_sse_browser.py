"""A real Chromium EventSource across a drain: it reconnects with Last-Event-ID, losing nothing.

There is no skip: without Chromium this fails.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from playwright.sync_api import Page

from .conftest import start_gunicorn, stop_gunicorn
from .test_dashboard_browser import page  # noqa: F401 - the Chromium fixture

pytestmark = [pytest.mark.server, pytest.mark.browser]


def test_eventsource_reconnects_across_a_drain_without_gap_or_duplicate(
    tmp_path: Path,
    page: Page,  # noqa: F811
):
    extra = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", "8"]
    srv = start_gunicorn(
        tmp_path, "gthread", extra=extra, env={"STREAMER_TEST_DRAIN_TIMEOUT": "0.5"}
    )
    try:
        page.goto(f"http://{srv.host}:{srv.port}/sse/page/")
        page.wait_for_function("window.received.length >= 5")
        srv.proc.send_signal(signal.SIGHUP)  # new workers; the old one drains
        # The stream ends with a retry hint; the browser comes back with
        # Last-Event-ID (maybe first to the draining worker over a kept-alive
        # connection, which ends it at once) and lands on the new worker.
        page.wait_for_function("window.received.length >= 40", timeout=15000)
        received = page.evaluate("window.received")
        state = page.evaluate("source.readyState")
        opens = page.evaluate("window.opens")
    finally:
        stop_gunicorn(srv)
    assert opens >= 2 and state == 1, (opens, state)  # OPEN: it reconnected
    assert received == list(range(1, len(received) + 1)), received
    # Served by the old worker, then the new one; every stream ended cleanly.
    finished = [e for e in srv.events() if e[1:3] == ["finish", "browser"]]
    assert len({e[0] for e in finished}) == 2, finished
    assert {e[3] for e in finished} <= {"completed", "drained"}, finished


def test_eventsource_sends_a_non_ascii_id_back_and_it_is_read_as_sent(
    tmp_path: Path,
    page: Page,  # noqa: F811
):
    # Each stream sends one event, with an id, and ends; Chromium reconnects
    # after 100 ms with that id in Last-Event-ID, as UTF-8 bytes.
    srv = start_gunicorn(tmp_path, "gthread")
    try:
        page.goto(f"http://{srv.host}:{srv.port}/sse/resume-page/")
        page.wait_for_function("window.received.length >= 2", timeout=15000)
        received = page.evaluate("window.received")
    finally:
        stop_gunicorn(srv)
    assert received[:2] == ["None", repr("café ☃")], received
