"""A real Chromium seeks in an ``<audio>`` served by ``stream_response(Path)``: range requests, 206.

There is no skip: without Chromium this fails.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, Response

from .conftest import start_gunicorn, stop_gunicorn
from .test_dashboard_browser import page  # noqa: F401 - the Chromium fixture

pytestmark = [pytest.mark.server, pytest.mark.browser]

RATE = 22050
SECONDS = 180


def make_wav(path: Path) -> None:
    """Three minutes of a 440 Hz tone, 16-bit mono: about 8 MB, more than a first fetch."""
    second = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / RATE))) for i in range(RATE)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(second * SECONDS)


def test_seeking_in_audio_issues_range_requests_that_get_206(
    tmp_path: Path,
    page: Page,  # noqa: F811
) -> None:
    audio = tmp_path / "tone.wav"
    make_wav(audio)
    srv = start_gunicorn(tmp_path, "gthread")
    responses: list[tuple[int, str, str]] = []

    def seen(response: Response) -> None:
        if "/r/file/" in response.url:
            headers = response.request.headers
            responses.append(
                (
                    response.status,
                    headers.get("range", ""),
                    response.headers.get("content-range", ""),
                )
            )

    page.on("response", seen)
    try:
        page.goto(f"http://{srv.host}:{srv.port}/r/audio/?p={quote(str(audio))}")
        page.wait_for_function("document.getElementById('a').readyState >= 1", timeout=15000)
        assert page.evaluate("document.getElementById('a').duration") == pytest.approx(SECONDS)
        page.evaluate(
            """() => new Promise(done => {
                const a = document.getElementById('a');
                a.addEventListener('seeked', done, {once: true});
                a.currentTime = 150;
            })"""
        )
        page.wait_for_function("document.getElementById('a').readyState >= 2", timeout=15000)
        position = page.evaluate("document.getElementById('a').currentTime")
    finally:
        stop_gunicorn(srv)
    assert position == pytest.approx(150, abs=0.5)
    seek_offset = 44 + 150 * RATE * 2  # the WAV header, then 2 bytes a sample
    # Chromium asks from where the seek lands (rounded down to its block), and gets it.
    starts = [int(cr.split()[1].split("-")[0]) for status, _, cr in responses if status == 206]
    assert any(seek_offset - (1 << 20) <= start <= seek_offset for start in starts), responses
    assert all(status in (200, 206) for status, _, _ in responses), responses
