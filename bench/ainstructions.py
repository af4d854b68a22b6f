"""The async rechunker against its ten-line twin, counted in instructions.

``aiter_chunks`` and ``anaive_rechunk`` (bench/views.py) over 200k records of
33 B, with consumer sends that never suspend and sends that suspend
(``asyncio.sleep(0)``). Each contender runs in its own process under
valgrind's callgrind, once with one stream and once with three; half the
difference is the instructions of one stream (imports and start-up cancel
out), so the figure does not depend on the machine's load.

    .venv/bin/python -m bench.ainstructions     # about 1.5 minutes, needs valgrind
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

RECORDS = 200_000


async def _source(n: int) -> AsyncIterator[bytes]:
    from bench.views import ROW

    for _ in range(n):
        yield ROW


async def _consume(chunks: AsyncIterator[bytes], suspend: bool) -> None:
    async for _ in chunks:
        if suspend:
            await asyncio.sleep(0)  # a send that waits for the socket


def _child(which: str, suspend: bool, streams: int) -> None:
    from bench.views import anaive_rechunk
    from django_streamer.core.achunking import aiter_chunks

    async def run() -> None:
        for _ in range(streams):
            if which == "anaive":
                chunks = anaive_rechunk(_source(RECORDS))
            else:
                chunks = aiter_chunks(_source(RECORDS), chunk_size=65536, flush_interval=0.1)
            await _consume(chunks, suspend)

    asyncio.run(run())


def _count(which: str, suspend: bool, streams: int, out: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, "-m", "bench.ainstructions", "--child", which]
    cmd += ["--suspend"] if suspend else []
    cmd += ["--streams", str(streams)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {done.stderr[-500:]}")
    return int(found.group(1))


def per_stream(which: str, suspend: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        one = _count(which, suspend, 1, Path(tmp) / "one")
        three = _count(which, suspend, 3, Path(tmp) / "three")
    return (three - one) // 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["anaive", "streamer"])
    parser.add_argument("--suspend", action="store_true")
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.suspend, args.streams)
        return
    print("| 200k records of 33 B, async source | anaive | aiter_chunks | streamer / anaive |")
    print("|---|---|---|---|")
    for suspend in (False, True):
        a, s = per_stream("anaive", suspend), per_stream("streamer", suspend)
        how = "sends suspend" if suspend else "sends never suspend"
        print(f"| {how} | {a:,} instructions | {s:,} | {s / a:.3f} (<= 1.0) |", flush=True)


if __name__ == "__main__":
    main()
