"""prometheus_client's multiprocess mode: a thread mirroring our figures into its files.

In that mode django-prometheus serves only what ``MultiProcessCollector``
finds in ``PROMETHEUS_MULTIPROC_DIR``, so one process on the host (elected by
a lock) rewrites the host-wide figures there every :data:`MIRROR_INTERVAL`.
"""

from __future__ import annotations

import os
from typing import Any

from .collector import collector
from .elected import ElectedThread, open_election_lock

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
    """The mirror's election lock (see :func:`.elected.open_election_lock`)."""
    return open_election_lock(Mirror.lock_name)


class Mirror(ElectedThread):
    """Rewrites the mirror every second from the host's elected process, while
    ``PROMETHEUS_MULTIPROC_DIR`` is set."""

    thread_name = "django-streamer-mirror"
    lock_name = ".mirror.lock"
    interval = MIRROR_INTERVAL
    what = "the django-prometheus mirror"

    def target(self) -> str | None:
        return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

    def tick(self, target: str) -> None:
        write_multiprocess_mirror(target)


mirror = Mirror()


def ensure_mirror() -> None:
    """Start the mirror thread in this process, once, when the mode is on."""
    mirror.ensure()
