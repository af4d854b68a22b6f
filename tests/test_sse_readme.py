"""The SSE page's example (docs/sse.md), run as written: a feed, resuming, and stopping."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from django.test import RequestFactory

import django_streamer.sse
from django_streamer.core.sse.threads import ThreadBudget
from django_streamer.response import StreamingResponse

README = (Path(__file__).resolve().parent.parent / "docs" / "sse.md").read_text()


def readme_example() -> dict[str, Any]:
    section = README.split("\n## ", 1)[0]  # the page's first part: the API and its example
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (code,) = [block for block in blocks if "def feed(request)" in block]
    namespace: dict[str, Any] = {"__name__": "readme_sse_example"}
    exec(compile(code, "docs/sse.md", "exec"), namespace)
    return namespace


def open_feed(example: dict[str, Any], last_event_id: str | None = None) -> StreamingResponse:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    response = example["feed"](RequestFactory().get("/feed/", headers=headers))
    assert isinstance(response, StreamingResponse) and response.status_code == 200
    return response


def test_the_readme_feed_sends_what_was_missed_then_what_is_new():
    example = readme_example()
    example["post"]("hello")
    response = open_feed(example)
    chunks = iter(response)
    assert next(chunks) == b"retry: 2000\n\n"
    assert next(chunks) == b'id: 1\ndata: {"text":"hello"}\n\n'
    threading.Timer(0.2, example["post"], args=["two"]).start()
    started = time.monotonic()
    assert next(chunks) == b'id: 2\ndata: {"text":"two"}\n\n'
    assert time.monotonic() - started < 3  # woken by the post, not by the 5 s step
    response.close()

    resumed = open_feed(example, last_event_id="1")
    chunks = iter(resumed)
    assert next(chunks) == b"retry: 2000\n\n"
    assert next(chunks) == b'id: 2\ndata: {"text":"two"}\n\n'
    resumed.close()

    junk = open_feed(example, last_event_id="not a number")
    chunks = iter(junk)
    next(chunks)
    body = b""
    while body.count(b"\n\n") < 2:  # events already waiting may share a write
        body += next(chunks)
    assert body == b'id: 1\ndata: {"text":"hello"}\n\nid: 2\ndata: {"text":"two"}\n\n'
    junk.close()


def test_the_readme_feeds_source_stops_after_its_stream_closes(monkeypatch):
    budget = ThreadBudget()
    monkeypatch.setattr(django_streamer.sse, "SOURCE_THREADS", budget)
    example = readme_example()
    response = open_feed(example)
    chunks = iter(response)
    next(chunks)
    assert budget.held == 1
    response.close()
    example["post"]("wakes the closed stream's source")
    deadline = time.monotonic() + 5
    while budget.held and time.monotonic() < deadline:
        time.sleep(0.02)
    assert budget.held == 0
