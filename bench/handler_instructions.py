"""Instructions per request through Django's ``WSGIHandler``, no server: quick A/B.

    .venv/bin/python -m bench.handler_instructions /limited/none /limited/process
    .venv/bin/python -m bench.handler_instructions --metrics off /limited/none

Each path runs in its own process under ``valgrind --tool=callgrind``: 50 warm-up
requests, then N; the figure is the slope between N = 40 and N = 240, so imports and
start-up cancel out (repeatable to ~100 instructions with ``PYTHONHASHSEED=0``). No
gunicorn: the server's own share is left out, so the per-request baseline is about half
``bench.instructions``'s, and a difference between paths is what to read.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _requests(path: str, metrics: bool, n: int) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.common import setup_django, wsgi_request

    setup_django()
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    settings.STREAMER_METRICS = metrics
    handler = WSGIHandler()
    for _ in range(50 + n):
        wsgi_request(handler, path)


def _total(path: str, metrics: str, n: int) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
        "-m", "bench.handler_instructions", "--child", str(n), "--metrics", metrics, path,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0", "DJANGO_SETTINGS_MODULE": "bench.settings"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total: {done.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="bench URLs, e.g. /limited/process")
    parser.add_argument("--metrics", choices=("on", "off"), default="on")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _requests(args.paths[0], args.metrics == "on", args.child)
        return
    for path in args.paths:
        per = (_total(path, args.metrics, 240) - _total(path, args.metrics, 40)) / 200
        print(f"{path} (metrics {args.metrics}): {per:,.0f} instructions per request")


if __name__ == "__main__":
    main()
