"""The encoders, decoded by real decoders: Python's zlib, brotli and zstandard, and curl."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import pytest
import zstandard

if sys.version_info >= (3, 14):
    from compression import zstd as stdlib_zstd

    STDLIB_ZSTD = "compression.zstd"
else:
    from backports import zstd as stdlib_zstd

    STDLIB_ZSTD = "backports.zstd"

from django_streamer.core.compression import codecs
from django_streamer.core.compression.codecs import (
    BrotliEncoder,
    GzipEncoder,
    ZstdEncoder,
    available_codings,
    make_encoder,
)

from .decoders import Decoder, decode

CODINGS = ("gzip", "br", "zstd")


def body(n: int = 20_000) -> bytes:
    rnd = random.Random(n)
    return b"".join(b"%d,%d,%s\n" % (i, rnd.randrange(10**6), b"ok" * (i % 5)) for i in range(n))


def encode(encoder: codecs.Encoder, data: bytes, piece: int = 4096) -> bytes:
    out = [encoder.compress(data[i : i + piece]) for i in range(0, len(data), piece)]
    return b"".join(out) + encoder.finish()


def encoders(coding: str, padding: int) -> list[codecs.Encoder]:
    """Every implementation of ``coding``: both zstd APIs are tested, not just the one in use."""
    if coding == "gzip":
        return [GzipEncoder(level=6, padding=padding)]
    if coding == "br":
        return [BrotliEncoder(level=4, padding=padding)]
    return [
        ZstdEncoder(level=3, padding=padding, backend="zstandard"),
        ZstdEncoder(level=3, padding=padding, backend=STDLIB_ZSTD),
    ]


@pytest.mark.parametrize("padding", [0, 1, 57, 99])
@pytest.mark.parametrize("coding", CODINGS)
def test_whole_body_round_trips(coding, padding):
    data = body()
    for encoder in encoders(coding, padding):
        assert decode(coding, encode(encoder, data)) == data


@pytest.mark.parametrize("coding", CODINGS)
def test_empty_body_is_a_complete_stream(coding):
    for encoder in encoders(coding, 10):
        assert decode(coding, encoder.finish()) == b""


def test_one_shot_library_decoders_agree():
    data = body()
    assert gzip.decompress(encode(make_encoder("gzip"), data)) == data
    assert brotli.decompress(encode(make_encoder("br"), data)) == data
    # The stdlib API's one-shot decompress reads every frame, skippable ones too.
    assert stdlib_zstd.decompress(encode(make_encoder("zstd"), data)) == data


def test_gzip_padding_is_a_file_name_like_djangos():
    raw = GzipEncoder(level=6, padding=7).finish()
    assert raw[3] == 0x08  # FNAME
    assert raw[10:18] == b"aaaaaaa\0"
    assert GzipEncoder(level=6, padding=0).finish()[3] == 0


@pytest.mark.parametrize("coding", CODINGS)
def test_padding_varies_the_length_not_the_content(coding):
    data = body(2000)
    sizes = set()
    for _ in range(40):
        wire = encode(make_encoder(coding), data)
        assert decode(coding, wire) == data
        sizes.add(len(wire))
    assert len(sizes) > 10
    assert max(sizes) - min(sizes) < codecs.MAX_PADDING + 8


def test_no_padding_when_asked():
    data = body(2000)
    sizes = {len(encode(make_encoder("zstd", max_padding=0), data)) for _ in range(5)}
    assert len(sizes) == 1


@pytest.mark.parametrize("coding", CODINGS)
def test_every_flush_makes_everything_so_far_decodable(coding):
    """A ticker: each tick, flushed, comes out of a real decoder at once."""
    for encoder in encoders(coding, 33):
        dec = Decoder(coding)
        for i in range(50):
            tick = b'{"tick": %d}\n' % i
            assert dec.feed(encoder.compress(tick) + encoder.flush()) == tick
            assert not dec.complete
        assert dec.feed(encoder.finish()) == b""
        assert dec.complete


@pytest.mark.parametrize("coding", CODINGS)
def test_an_unfinished_stream_is_reported_truncated(coding):
    data = body()
    for encoder in encoders(coding, 20):
        wire = encoder.compress(data) + encoder.flush()
        dec = Decoder(coding)
        assert dec.feed(wire) == data  # all of it readable...
        assert not dec.complete  # ...but never a clean end


def test_unfinished_streams_fail_one_shot_decoders():
    data = body()
    for coding, one_shot, error in [
        ("gzip", gzip.decompress, EOFError),
        ("br", brotli.decompress, brotli.error),
        ("zstd", stdlib_zstd.decompress, stdlib_zstd.ZstdError),
    ]:
        encoder = make_encoder(coding)
        wire = encoder.compress(data) + encoder.flush()
        with pytest.raises(error):
            one_shot(wire)
        assert one_shot(wire + encoder.finish()) == data


def test_zstd_window_fits_what_browsers_accept():
    """RFC 9659: HTTP zstd decoders may refuse windows over 8 MiB."""
    data = random.Random(3).randbytes(1 << 20) * 12
    wire = encode(make_encoder("zstd", max_padding=0), data, piece=65536)
    params = zstandard.get_frame_parameters(wire)
    assert params.window_size <= 8 << 20


def test_levels_are_the_documented_ones():
    assert codecs.LEVELS == {"zstd": 3, "br": 4, "gzip": 6}


def test_available_codings_here_in_order_of_preference():
    assert available_codings() == ("zstd", "br", "gzip")
    assert codecs.zstd_backend() in ("compression.zstd", "backports.zstd", "zstandard")


def test_unknown_coding_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown content coding 'deflate'"):
        make_encoder("deflate")


def test_brotli_metadata_size_bounds():
    with pytest.raises(ValueError, match="1-256"):
        codecs.brotli_metadata(0)
    with pytest.raises(ValueError, match="1-256"):
        codecs.brotli_metadata(257)


# curl, through a tiny local server: libcurl's own zlib, libbrotli and libzstd.


@pytest.fixture
def serve() -> Iterator[tuple[str, dict[str, tuple[str, bytes]]]]:
    bodies: dict[str, tuple[str, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            coding, payload = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("coding", CODINGS)
def test_curl_decodes_each_coding_with_padding_and_flushes(serve, coding):
    base, bodies = serve
    data = body()
    for n, encoder in enumerate(encoders(coding, 64)):
        # A flush in the middle, as a forced chunk makes, then the rest.
        wire = encoder.compress(data[:5000]) + encoder.flush() + encode(encoder, data[5000:])
        bodies[f"/{coding}{n}"] = (coding, wire)
        out = subprocess.run(
            ["curl", "--silent", "--show-error", "--compressed", f"{base}/{coding}{n}"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        assert out == data
