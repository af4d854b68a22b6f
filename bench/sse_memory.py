"""Where an idle SSE stream's memory goes: tracemalloc over N streams served in-process.

    .venv/bin/python -m bench.sse_memory            # 300 idle /sse/idle streams
    .venv/bin/python -m bench.sse_memory 1000 40    # streams, traceback depth

Drives Django's ASGIHandler with a fake receive/send (no server, so the server's
share, measured apart with a bare ASGI app under gunicorn, is not in these
figures) and splits the Python allocations still held per open stream by who
made them: this app (a django_streamer frame on the traceback), the view's
source, Django/asgiref, asyncio, and this harness. Threads' stacks and thread
states are not traced: count threads (``/proc/PID/status``) for those.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
from collections.abc import Mapping
from typing import Any

from bench.common import asgi_receive, asgi_scope

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def _kind(tb: tracemalloc.Traceback) -> str:
    names = [frame.filename for frame in tb]
    if any("/django_streamer/" in n for n in names):
        return "django_streamer"
    if any(n.endswith("bench/sse_views.py") for n in names):
        return "the view's source"
    if any("site-packages" in n for n in names):
        return "Django/asgiref"
    if any(n.endswith(("sse_memory.py", "bench/common.py")) for n in names[-3:]):
        return "harness"
    return "asyncio"


async def main(count: int) -> None:
    from django.core.asgi import get_asgi_application

    app = get_asgi_application()
    gone = asyncio.Event()
    open_: list[asyncio.Future[None]] = []

    async def one() -> None:
        started = asyncio.Event()

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                started.set()

        scope = asgi_scope("/sse/idle?ping=15", headers=[(b"accept", b"text/event-stream")])
        open_.append(asyncio.ensure_future(app(scope, asgi_receive(gone), send)))
        await started.wait()

    for _ in range(5):  # warm up
        await one()
    await asyncio.sleep(0.2)
    gc.collect()
    before = tracemalloc.take_snapshot()
    threads = threading.active_count()
    for _ in range(count):
        await one()
    await asyncio.sleep(0.5)
    gc.collect()
    after = tracemalloc.take_snapshot()
    print(f"{count} idle streams; threads {threads} -> {threading.active_count()}")
    split: dict[str, int] = {}
    ours: dict[str, int] = {}
    for diff in after.compare_to(before, "traceback"):
        kind = _kind(diff.traceback)
        split[kind] = split.get(kind, 0) + diff.size_diff
        if kind == "django_streamer":
            frame = [f for f in diff.traceback if "/django_streamer/" in f.filename][-1]
            where = f"{frame.filename.split('django_streamer/')[-1]}:{frame.lineno}"
            ours[where] = ours.get(where, 0) + diff.size_diff
    print(f"total {sum(split.values()) / count / 1024:.2f} KiB per stream")
    for kind, size in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:20} {size / count / 1024:6.2f} KiB")
    print("django_streamer, by line:")
    for where, size in sorted(ours.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {size / count:6.0f} B  {where}")
    gone.set()
    await asyncio.gather(*open_, return_exceptions=True)


if __name__ == "__main__":
    import django

    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    tracemalloc.start(depth)
    django.setup()
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
