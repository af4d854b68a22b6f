"""prometheus_client's multiprocess mode: a thread mirroring our figures into its files.

In that mode django-prometheus serves only what ``MultiProcessCollector``
finds in ``PROMETHEUS_MULTIPROC_DIR``, so one process on the host (elected by
a lock) rewrites the host-wide figures there every :data:`MIRROR_INTERVAL`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import Any

from ..core.statedir import open_private_file
from .collector import collector
from .store import get_store

__all__ = [
    "MIRROR_INTERVAL",
    "MIRROR_SUFFIX",
    "Mirror",
    "mirror",
    "open_mirror_lock",
    "write_multiprocess_mirror",
]

MIRROR_SUFFIX = "djangostreamer"
MIRROR_INTERVAL = 1.0
_KIND = {"counter": "counter", "gauge": "gauge_max", "histogram": "histogram"}


def _entries(family: Any) -> list[tuple[str, float]]:
    """One family's samples as (multiprocess key, value) pairs."""
    from prometheus_client.mmap_dict import mmap_key

    out: list[tuple[str, float]] = []
    previous: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        labels = dict(sample.labels)
        value = float(sample.value)
        if family.type == "histogram":
            if sample.name.endswith("_count"):
                continue  # the collector recounts from the buckets
            if sample.name.endswith("_bucket"):
                # Stored per bucket, not cumulative: the collector adds them up.
                group = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                cumulative = value
                value -= previous.get(group, 0.0)
                previous[group] = cumulative
        names = sorted(labels)
        values = [labels[n] for n in names]
        out.append((mmap_key(family.name, sample.name, names, values, family.documentation), value))
    return out


def write_multiprocess_mirror(directory: str) -> None:
    """Write every figure into ``directory`` as prometheus_client multiprocess files.

    One set of files holds the host-wide figures (no pid in their names, so
    ``mark_process_dead`` never touches them), replaced whole, so each metric
    shows up exactly once.
    """
    from prometheus_client.mmap_dict import MmapedDict

    files: dict[str, list[tuple[str, float]]] = {kind: [] for kind in _KIND.values()}
    for family in collector.collect():
        files[_KIND[family.type]].extend(_entries(family))
    os.makedirs(directory, exist_ok=True)
    for kind, entries in files.items():
        final = os.path.join(directory, f"{kind}_{MIRROR_SUFFIX}.db")
        tmp = f"{final}.{os.getpid()}.tmp"
        mapped = MmapedDict(tmp)  # type: ignore[no-untyped-call]
        try:
            for key, value in entries:
                mapped.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
        finally:
            mapped.close()  # type: ignore[no-untyped-call]
        os.replace(tmp, final)


def open_mirror_lock() -> int:
    """The mirror's election lock: private, never followed through a symlink,
    and close-on-exec so a spawned program cannot keep this process elected."""
    return open_private_file(os.path.join(get_store().directory, ".mirror.lock"))


def _mirror_loop(directory: str) -> None:
    lock: int | None = None
    leader = False
    while True:
        time.sleep(MIRROR_INTERVAL)
        if not leader:
            try:
                # Opened here, not before the loop: the thread starts with the
                # first stream, before that stream has made the store directory.
                if lock is None:
                    lock = open_mirror_lock()
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                leader = True  # held until this process exits; then another takes over
            except OSError:
                continue
        try:
            write_multiprocess_mirror(directory)
        except Exception:  # a bad tick must not end the thread
            logging.getLogger("django_streamer").exception("metrics mirror failed")


class Mirror:
    """Starts the mirror thread once per process, when the mode is on.

    Both pids are per process, so a forked worker checks (and starts) again.
    """

    def __init__(self) -> None:
        self._checked_pid = 0  # the process that looked for the mode
        self._started_pid = 0  # the process that runs the thread
        self._lock = threading.Lock()

    def start_once(self) -> None:
        """Per stream: one pid comparison once this process has looked."""
        if self._checked_pid != os.getpid():
            self.ensure()

    def ensure(self) -> None:
        pid = os.getpid()
        self._checked_pid = pid
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return
        with self._lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
        threading.Thread(
            target=_mirror_loop, args=(directory,), name="django-streamer-mirror", daemon=True
        ).start()

    def reset(self) -> None:
        """Look for the mode again on the next stream (a started thread runs on)."""
        self._checked_pid = 0


mirror = Mirror()


def ensure_mirror() -> None:
    """Start the mirror thread in this process, once, when the mode is on."""
    mirror.ensure()
