"""A metrics store that tells the truth across processes. Plain Python, no Django.

- :mod:`.layout`: the file format (header, rows of doubles, active streams);
- :mod:`.names`: the host-wide name -> row table and :func:`check_name`;
- :mod:`.procfile`: this process's mapped file;
- :mod:`.reading`: validated reads, folding and summing;
- :mod:`.store`: the directory: writer binding, compaction, snapshots, reset;
- :mod:`.recorder`: :class:`StreamMetrics` and the limiter's ``record_*``.

This is what prometheus_client's multiprocess mode lacks: it keeps a file per
dead pid forever, keeps their gauges, and resets counters when those files
are deleted. Importing this package opens no file.
"""

from __future__ import annotations

from .layout import DURATION_BUCKETS, OUTCOMES, TTFB_BUCKETS, WAIT_BUCKETS, BadFile
from .names import NAME_BYTES, OTHER, check_name
from .reading import Snapshot
from .recorder import (
    StreamMetrics,
    record_admitted,
    record_backend_error,
    record_rejected,
    record_released,
)
from .store import Store

__all__ = [
    "DURATION_BUCKETS",
    "NAME_BYTES",
    "OTHER",
    "OUTCOMES",
    "TTFB_BUCKETS",
    "WAIT_BUCKETS",
    "BadFile",
    "Snapshot",
    "Store",
    "StreamMetrics",
    "check_name",
    "record_admitted",
    "record_backend_error",
    "record_rejected",
    "record_released",
]
