"""In-process speed and ratio of the codecs at the levels around our defaults.

    python -m bench.levels           # the table the README's Compression section shows

Feeds each body to an encoder in 64 KiB chunks with no flush (how a fast
stream is compressed), then times one 64 KiB chunk alone (what an ASGI event
loop would be blocked for), and the size when every 64 KiB chunk is flushed.
"""

from __future__ import annotations

import random
import time

from django_streamer.core.compression.codecs import available_codings, make_encoder

CHUNK = 65536
LEVELS = {"gzip": (1, 4, 6), "br": (3, 4, 5), "zstd": (1, 3, 6)}


def csv_rows(n: int = 150_000) -> bytes:
    rnd = random.Random(1)  # the same body on every run
    return b"".join(
        b"%d,customer-%05d,2026-11-%02d,%d.%02d,EUR,%s\n"
        % (
            i,
            rnd.randrange(100_000),
            rnd.randrange(1, 29),
            rnd.randrange(5000),
            rnd.randrange(100),
            rnd.choice((b"paid", b"open", b"refunded")),
        )
        for i in range(n)
    )


def records(n: int = 300_000) -> bytes:
    """Tiny JSON lines that differ only in a counter."""
    return b"".join(b'{"id":%d,"kind":"tick","ok":true}\n' % i for i in range(n))


def _chunks(body: bytes) -> list[bytes]:
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


def measure(coding: str, level: int, body: bytes) -> tuple[float, int, int, float]:
    """MB/s, whole-stream size, size flushed every chunk, ms per 64 KiB chunk."""
    chunks = _chunks(body)
    enc = make_encoder(coding, level=level, max_padding=0)
    start = time.perf_counter()
    size = sum(len(enc.compress(c)) for c in chunks) + len(enc.finish())
    elapsed = time.perf_counter() - start
    enc = make_encoder(coding, level=level, max_padding=0)
    flushed = sum(len(enc.compress(c)) + len(enc.flush()) for c in chunks) + len(enc.finish())
    enc = make_encoder(coding, level=level, max_padding=0)
    one = chunks[len(chunks) // 2]
    start = time.perf_counter()
    for _ in range(20):
        enc.compress(one)
        enc.flush()
    per_chunk = (time.perf_counter() - start) / 20 * 1000
    return len(body) / elapsed / 1e6, size, flushed, per_chunk


def main() -> None:
    bodies = {"150k CSV rows": csv_rows(), "300k repetitive records": records()}
    for label, body in bodies.items():
        print(f"\n{label}: {len(body):,} B")
        print("| codec | level | MB/s | bytes | ratio | flushed/64KiB | ms per 64 KiB |")
        print("|---|---|---|---|---|---|---|")
        for coding in available_codings():
            for level in LEVELS[coding]:
                speed, size, flushed, ms = measure(coding, level, body)
                print(
                    f"| {coding} | {level} | {speed:.0f} | {size:,} | {len(body) / size:.1f} "
                    f"| +{(flushed / size - 1) * 100:.1f}% | {ms:.2f} |"
                )


if __name__ == "__main__":
    main()
