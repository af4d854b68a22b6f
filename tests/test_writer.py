"""stream_writer() through Django's real WSGI and ASGI handlers, in-process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_streamer import StreamClosed, stream_writer
from tests.conftest import call_asgi, wsgi_iter

pytestmark = pytest.mark.urls("tests.writer_urls")


def writer_threads() -> int:
    return sum(t.name.startswith("streamer-writer") for t in threading.enumerate())


def wait_for_no_writer_threads(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while writer_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer_threads() == 0


def test_stream_closed_is_a_broken_pipe():
    assert issubclass(StreamClosed, BrokenPipeError)
    assert issubclass(StreamClosed, OSError)


def test_wsgi_body_is_what_the_producer_wrote_in_right_sized_chunks():
    status, _, content = wsgi_iter("/fast?n=1000000&piece=1000")
    chunks = list(content)
    content.close()
    assert status.startswith("200")
    assert b"".join(chunks) == b"x" * 1000000
    assert {len(c) for c in chunks[:-1]} == {64 * 1024}
    wait_for_no_writer_threads()


def test_text_producer_with_csv_writer():
    _, _, content = wsgi_iter("/text-csv?rows=3")
    assert b"".join(content) == b'0,name 0,"a,b"\r\n1,name 1,"a,b"\r\n2,name 2,"a,b"\r\n'
    content.close()


def test_the_thread_starts_when_the_server_reads_not_when_the_view_returns():
    response = stream_writer(lambda out: out.write(b"x"))
    time.sleep(0.05)
    assert writer_threads() == 0
    assert b"".join(response) == b"x"
    response.close()
    wait_for_no_writer_threads()


def test_a_failure_before_the_first_byte_raises_at_the_first_next(caplog):
    def produce(out):
        raise RuntimeError("nothing written")

    response = stream_writer(produce)
    with pytest.raises(RuntimeError, match="nothing written"):
        next(iter(response))
    response.close()
    # Through Django's WSGIHandler the first chunk is made before the headers
    # go, so the error takes Django's error handling: a 500 page.
    status, _, body = wsgi_iter("/fail")
    assert status.startswith("500")
    body.close()
    assert "producer broke" in caplog.text and "before any byte was sent" in caplog.text


def test_a_failure_midway_is_logged_with_the_stream_name_and_the_body_is_cut(caplog):
    _, _, content = wsgi_iter("/fail?after=3")
    got = []
    with pytest.raises(RuntimeError, match="producer broke"):
        for chunk in content:
            got.append(chunk)
    content.close()
    assert b"".join(got) == b"0\n1\n2\n"
    assert "tests.writer_views.fail" in caplog.text
    assert "failed after 6 bytes" in caplog.text


def test_200_aborted_streams_leave_no_producer_thread():
    baseline = threading.active_count()
    for _ in range(200):
        _, _, content = wsgi_iter("/endless")
        next(iter(content))
        content.close()  # what a server does when the client has gone
    wait_for_no_writer_threads()
    assert threading.active_count() == baseline


def test_asgi_sync_and_async_producers_and_an_abort():
    result = asyncio.run(call_asgi("/fast?n=300000"))
    assert result.ended and len(result.body) == 303104
    result = asyncio.run(call_asgi("/async-fast?n=300000"))
    assert result.ended and result.body == b"a" * 303104
    result = asyncio.run(call_asgi("/endless", disconnect_after=3))
    assert not result.ended
    wait_for_no_writer_threads()


def test_asgi_async_failure_leaves_the_body_unfinished():
    result = asyncio.run(call_asgi("/async-fail"))
    assert result.status == 200
    assert result.body == b"partial\n"
    assert not result.ended


def test_bad_arguments_and_settings_are_named():
    with pytest.raises(TypeError, match="produce must be callable"):
        stream_writer(b"not a producer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        stream_writer(lambda out: None, chunk_size=0)
    with (
        override_settings(STREAMER_WRITER_BUFFER=-1),
        pytest.raises(ImproperlyConfigured, match="setting STREAMER_WRITER_BUFFER"),
    ):
        stream_writer(lambda out: None)


@override_settings(STREAMER_WRITER_BUFFER=8192)
def test_the_setting_bounds_what_the_producer_runs_ahead():
    written = []

    def produce(out):
        for _ in range(1000):
            out.write(b"z" * 512)
            written.append(512)

    response = stream_writer(produce, chunk_size=1024)
    chunks = iter(response)
    next(chunks)
    time.sleep(0.2)
    assert 8192 <= sum(written) <= 8192 + 1024 + 512
    response.close()
    wait_for_no_writer_threads()


def test_the_limiter_slot_is_held_until_the_producer_has_ended():
    from django.test import RequestFactory

    from django_streamer import limit_concurrency

    seen_while_cleaning_up = []

    @limit_concurrency(1, name="writer-slot-test")
    def view(request):
        def produce(out):
            try:
                while True:
                    out.write(b"x" * 1000)
            except StreamClosed:
                # The client has gone; the producer is still cleaning up.
                seen_while_cleaning_up.append(view(RequestFactory().get("/")).status_code)
                raise

        return stream_writer(produce)

    response = view(RequestFactory().get("/"))
    next(iter(response))
    response.close()
    assert seen_while_cleaning_up == [503]
    again = view(RequestFactory().get("/"))  # the producer ended: the slot is free
    assert again.status_code == 200
    again.close()
    wait_for_no_writer_threads()
