"""A 64 MiB file fetched as 16 x 4 MiB ranges against the whole file, under gunicorn gthread.

    .venv/bin/python -m bench.ranges              # prints one table row
    .venv/bin/python -m bench.ranges --rounds 5

Bytes/s over the raw socket (``django_streamer.testing.fetch``, one connection
at a time), median of the rounds, the contenders interleaved against the same
gunicorn worker: ``stream_response(Path)`` whole; the same as 16 sequential
``Range`` requests (each a 206 sent with sendfile from its offset); and
Django's ``FileResponse`` with a ``Range`` header, which it ignores (it sends
the whole 64 MiB), for reference. Target: ranges >= 0.9x of the whole file.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench.run import Gunicorn, fmt
from django_streamer.testing import fetch

SIZE = 64 << 20
PIECE = 4 << 20
TARGET = 0.9


def _get(port: int, path: str, expect: int, length: int, **headers: str) -> int:
    response = fetch("127.0.0.1", port, path, headers=headers, timeout=120)
    body = sum(len(chunk) for chunk in response.chunks)
    if response.status != expect or body != length or not response.complete:
        raise RuntimeError(f"{path} {headers}: {response.status}, {body} bytes, {response.error}")
    return body


def whole(port: int) -> int:
    return _get(port, "/file/streamer", 200, SIZE)


def ranges(port: int) -> int:
    return sum(
        _get(port, "/file/streamer", 206, PIECE, Range=f"bytes={start}-{start + PIECE - 1}")
        for start in range(0, SIZE, PIECE)
    )


def file_response(port: int) -> int:
    return _get(port, "/file/plain", 200, SIZE, Range=f"bytes=0-{PIECE - 1}")


def rate(fetcher: Callable[[int], int], port: int) -> float:
    started = time.perf_counter()
    sent = fetcher(port)
    return sent / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    contenders = {"whole": whole, "ranges": ranges, "FileResponse": file_response}
    server = Gunicorn("gthread")
    try:
        for fetcher in contenders.values():  # warm up (and make the bench file)
            fetcher(server.port)
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, fetcher in contenders.items():
                results[name].append(rate(fetcher, server.port))
                server.wait_idle()
    finally:
        server.stop()
    median = {name: statistics.median(values) for name, values in results.items()}
    ratio = median["ranges"] / median["whole"]
    print("| scenario | whole file | 16 x 4 MiB ranges | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| 64 MiB Path, gthread | {fmt(median['whole'], 'bytes')} "
        f"| {fmt(median['ranges'], 'bytes')} | {ratio:.2f}x (FileResponse with a Range, "
        f"ignored: {fmt(median['FileResponse'], 'bytes')}) | >= {TARGET}x |"
    )


if __name__ == "__main__":
    main()
