"""Real headless Chromium decodes our zstd, br and gzip, padding included, and a ticker as it comes:
from the encoders served by hand, and from ``stream_response(compress=True)`` under gunicorn.

The BREACH padding is the part no Python decoder can vouch for: a zstd
skippable frame before the data frame, a brotli metadata meta-block. There is
no skip: without Chromium this fails.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from django_streamer.core.compression.codecs import (
    LEVELS,
    BrotliEncoder,
    GzipEncoder,
    ZstdEncoder,
    make_encoder,
)
from django_streamer.core.compression.stage import Compressor

from .compression_views import DATA
from .conftest import Server, start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CODINGS = ("zstd", "br", "gzip")
BODY = b"".join(b"%d,row,%d\n" % (i, i * 31) for i in range(20_000))
TICKS = 6
TICK_GAP = 0.3


def whole(coding: str) -> bytes:
    # The largest padding, so a skippable frame or metadata block is surely there.
    cls = {"zstd": ZstdEncoder, "br": BrotliEncoder, "gzip": GzipEncoder}[coding]
    encoder = cls(level=LEVELS[coding], padding=99)
    head = encoder.compress(BODY[:7000]) + encoder.flush()
    return head + encoder.compress(BODY[7000:]) + encoder.finish()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(b"<p>compression</p>", "text/html", None)
        elif self.path.startswith("/whole/"):
            coding = self.path.rsplit("/", 1)[1]
            self._send(whole(coding), "text/csv", coding)
        elif self.path.startswith("/ticker/"):
            self._ticker(self.path.rsplit("/", 1)[1])
        else:
            self._send(b"", "text/plain", None, status=404)

    def _send(self, body: bytes, ctype: str, coding: str | None, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if coding:
            self.send_header("Content-Encoding", coding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _ticker(self, coding: str) -> None:
        """Chunked, one forced chunk per tick, as the stage makes them."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Encoding", coding)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        stage = Compressor(make_encoder(coding), chunk_size=65536)
        for i in range(TICKS):
            for out in stage.feed(b"tick %d\n" % i, forced=True):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(out), out))
            self.wfile.flush()
            time.sleep(TICK_GAP)
        for out in stage.end():
            self.wfile.write(b"%x\r\n%s\r\n" % (len(out), out))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Browser, base: str) -> Iterator[Page]:
    pg = browser.new_page()
    pg.goto(f"{base}/")
    yield pg
    pg.close()


@pytest.mark.parametrize("coding", CODINGS)
def test_chromium_decodes_padded_streams(page, base, coding):
    text = page.evaluate("async (u) => (await fetch(u)).text()", f"{base}/whole/{coding}")
    assert text.encode() == BODY


READ_TICKS = """async (u) => {
  const reader = (await fetch(u)).body.pipeThrough(new TextDecoderStream()).getReader();
  const t0 = performance.now(), reads = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return reads;
    reads.push([performance.now() - t0, value]);
  }
}"""


@pytest.mark.parametrize("coding", CODINGS)
def test_chromium_reads_a_compressed_ticker_tick_by_tick(page, base, coding):
    reads = page.evaluate(READ_TICKS, f"{base}/ticker/{coding}")
    text = "".join(value for _, value in reads)
    assert text == "".join(f"tick {i}\n" for i in range(TICKS))
    # Each tick was decoded on its own, a gap after the one before it.
    ticks = [(ms, value) for ms, value in reads if value]
    assert [value for _, value in ticks] == [f"tick {i}\n" for i in range(TICKS)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
    assert min(gaps) > TICK_GAP * 1000 * 0.5


# -- the integrated path: stream_response(compress=True) under real gunicorn ---------


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_gunicorn(tmp_path_factory.mktemp("gthread"), "gthread")
    yield server
    stop_gunicorn(server)


@pytest.fixture(scope="module")
def streamer_page(browser: Browser, gunicorn: Server) -> Iterator[Page]:
    pg = browser.new_page()
    pg.goto(f"http://127.0.0.1:{gunicorn.port}/nowhere")  # any page of that origin
    yield pg
    pg.close()


FETCH = """async (u) => {
  const r = await fetch(u);
  return [r.headers.get('content-encoding'), await r.text()];
}"""


@pytest.mark.parametrize("coding", CODINGS)
def test_chromium_decodes_stream_response(streamer_page, coding):
    # ``ae`` stands in for Accept-Encoding, which fetch() may not set.
    encoding, text = streamer_page.evaluate(FETCH, f"/z/data?compress=1&ae={coding}")
    assert encoding == coding
    assert text.encode() == DATA


def test_chromium_gets_zstd_when_it_offers_everything(streamer_page):
    encoding, text = streamer_page.evaluate(FETCH, "/z/data?compress=1")
    assert encoding == "zstd"
    assert text.encode() == DATA


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("coding", CODINGS)
def test_chromium_reads_a_compressed_stream_response_tick_by_tick(streamer_page, coding, kind):
    url = f"/z/ticker?compress=1&kind={kind}&ae={coding}&n={TICKS}&gap={TICK_GAP}"
    reads = streamer_page.evaluate(READ_TICKS, url)
    ticks = [(ms, value) for ms, value in reads if value]
    assert [value for _, value in ticks] == [f"tick {i}\n" for i in range(TICKS)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
    assert min(gaps) > TICK_GAP * 1000 * 0.5
