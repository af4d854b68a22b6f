"""Streaming compression under a real gunicorn, with wrk sending ``Accept-Encoding``.

    .venv/bin/python -m bench.compress               # the README's compression table
    .venv/bin/python -m bench.compress --rounds 5

300k tiny records per request (bench/compress_views.py). For each coding:
requests/s (four connections, one gthread worker with four threads) and the
bytes on the wire, every contender interleaved in the same run; the sizes are
compared with the coding's level over the whole body in one go.
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import subprocess

import brotli

from bench.run import Gunicorn
from django_streamer.testing import fetch

from .compress_views import whole_body

CODINGS = {
    "gzip": ("gzipmw", "hcmw", "streamer", "identity"),
    "br": ("hcmw", "streamer"),
    "zstd": ("hcmw", "streamer"),
}
CONNECTIONS = 4


def wrk_rps(url: str, coding: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "30s",
         "-H", f"Accept-Encoding: {coding}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def wire_bytes(port: int, impl: str, coding: str) -> tuple[int, str]:
    wire = fetch("127.0.0.1", port, f"/z/{impl}", headers={"Accept-Encoding": coding})
    assert wire.complete and wire.status == 200, (impl, wire.status, wire.error)
    return len(wire.body), wire.headers.get("content-encoding", "identity")


def one_shot_size(coding: str, body: bytes) -> int:
    if coding == "gzip":
        return len(gzip.compress(body, compresslevel=6, mtime=0))
    if coding == "br":
        return len(brotli.compress(body, quality=4))
    from django_streamer.core.compression.codecs import make_encoder

    encoder = make_encoder("zstd", max_padding=0)
    return len(encoder.compress(body) + encoder.finish())


def run(rounds: int, seconds: int) -> dict[tuple[str, str], float]:
    server = Gunicorn("gthread")
    rps: dict[tuple[str, str], list[float]] = {}
    body = whole_body()
    try:
        for coding, contenders in CODINGS.items():
            whole = one_shot_size(coding, body)
            for impl in contenders:
                size, used = wire_bytes(server.port, impl, coding)
                print(
                    f"{coding:>4} {impl:>8}: {size:>10,} B on the wire ({used}); "
                    f"whole body at once: {whole:,} B ({size / whole - 1:+.1%})",
                    flush=True,
                )
            for _ in range(rounds):
                for impl in contenders:
                    url = f"http://127.0.0.1:{server.port}/z/{impl}"
                    rps.setdefault((coding, impl), []).append(wrk_rps(url, coding, seconds))
                    server.wait_idle()
    finally:
        server.stop()
    return {key: statistics.median(values) for key, values in rps.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    res = run(args.rounds, args.seconds)
    print(f"\nbody: {len(whole_body()):,} B uncompressed")
    print("| coding | contender | req/s | vs GZipMiddleware | vs django-http-compression |")
    print("|---|---|---|---|---|")
    for (coding, impl), value in res.items():
        gz = res[("gzip", "gzipmw")]
        hc = res[(coding, "hcmw")]
        print(f"| {coding} | {impl} | {value:,.2f} | {_ratio(value, gz)} | {_ratio(value, hc)} |")
    zstd, gzip_ours = res[("zstd", "streamer")], res[("gzip", "streamer")]
    print(f"\nzstd vs gzip, both ours: {zstd / gzip_ours:.2f}x (target >= 1.5x)")
    vs_mw = _ratio(gzip_ours, res[("gzip", "gzipmw")])
    print(f"gzip, ours vs GZipMiddleware: {vs_mw} (target >= 5x)")


def _ratio(value: float, base: float) -> str:
    # A contender that finished no request in the window (GZipMiddleware on a
    # short run) has no ratio: rerun with more --seconds.
    return f"{value / base:.2f}x" if base else "n/a (0 req/s: use more --seconds)"


if __name__ == "__main__":
    main()
