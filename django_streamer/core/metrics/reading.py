"""Reading metrics files: validated copies, folding and summing, as pure functions.

:class:`.directory.MetricsDir` decides which files to read and where the
results go; this module only turns a file's bytes into figures.
"""

from __future__ import annotations

import array
import os
from dataclasses import dataclass, field
from typing import cast

from ..statedir import UnsafeStateError, open_private_file
from .layout import (
    ACTIVE,
    ERRORS_AT,
    GAUGES,
    HIDDEN_AT,
    MAXIMA,
    POOL,
    STREAM,
    BadFile,
    Geometry,
    Layout,
    parse,
)
from .names import OTHER

__all__ = ["Image", "Snapshot", "accumulate", "fold", "load"]


@dataclass
class Image:
    """A validated copy of one metrics file."""

    geometry: Geometry
    pid: int
    values: array.array[float]
    data: bytes


def load(fd: int) -> Image:
    """A validated copy of the open file ``fd``; :class:`BadFile` if it is not one."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    geometry, pid = parse(data)
    values = array.array("d")
    values.frombytes(data[: geometry.active_base])
    return Image(geometry, pid, values, data)


def open_checked(path: str) -> int:
    """Open a metrics file read-write (a lock needs it), refusing one not ours."""
    try:
        return open_private_file(path, create=False)
    except UnsafeStateError as exc:
        raise BadFile(str(exc)) from exc


@dataclass
class Snapshot:
    """Host-wide figures: sums over live processes and the archive."""

    streams: dict[str, dict[str, float | list[float]]] = field(default_factory=dict)
    pools: dict[str, dict[str, float | list[float]]] = field(default_factory=dict)
    active: list[dict[str, object]] = field(default_factory=list)
    active_hidden: int = 0  # active streams the per-process tables had no room for
    store_errors: int = 0  # store failures, counted by the processes that had them
    processes: int = 0
    taken_at: float = 0.0


def _rows(geometry: Geometry) -> list[tuple[Layout, int]]:
    return [(STREAM, geometry.stream_base), (POOL, geometry.pool_base)]


def fold(dead: Image, archive: array.array[float], into: Geometry) -> None:
    """Add a dead process's figures into the archive's values.

    Counters and histograms add, maxima keep the larger, gauges are dropped;
    streams it had active are counted as ``lost``.
    """
    rows = min(dead.geometry.max_names, into.max_names) + 1
    archive[ERRORS_AT] += dead.values[ERRORS_AT]
    lost = STREAM.offsets["lost"]
    for (layout, dbase), (_, abase) in zip(_rows(dead.geometry), _rows(into), strict=True):
        for row in range(rows):
            d_at, a_at = dbase + row * layout.width, abase + row * layout.width
            for figure, offset in layout.offsets.items():
                for k in range(layout.widths[figure]):
                    d = dead.values[d_at + offset + k]
                    if not d:
                        continue
                    if figure == "active" and layout is STREAM:
                        archive[a_at + lost] += d
                    elif figure in MAXIMA:
                        archive[a_at + offset + k] = max(archive[a_at + offset + k], d)
                    elif figure not in GAUGES:
                        archive[a_at + offset + k] += d


def accumulate(image: Image, names: dict[str, list[str]], snap: Snapshot) -> None:
    """Add one file's figures and active streams to ``snap``."""
    g = image.geometry
    snap.store_errors += int(image.values[ERRORS_AT])
    snap.active_hidden += int(image.values[HIDDEN_AT])
    for (layout, base), kind, target in zip(
        _rows(g), ("stream", "pool"), (snap.streams, snap.pools), strict=True
    ):
        labels = names.get(kind, [OTHER])
        for row in range(g.max_names + 1):
            start = base + row * layout.width
            values = image.values[start : start + layout.width].tolist()
            if any(values):
                label = labels[row] if row < len(labels) else OTHER
                _add_row(target.setdefault(label, {}), layout, values)
    stream_names = names.get("stream", [OTHER])
    for i in range(g.max_active):
        row, started, sent, path = ACTIVE.unpack_from(image.data, g.active_base + i * ACTIVE.size)
        if started:
            snap.active.append(
                {
                    "stream": stream_names[row] if row < len(stream_names) else OTHER,
                    "path": path.rstrip(b"\0").decode("utf-8", "replace"),
                    "started": started,
                    "bytes": sent,
                    "pid": image.pid,
                }
            )


def _add_row(entry: dict[str, float | list[float]], layout: Layout, values: list[float]) -> None:
    for figure, offset in layout.offsets.items():
        width = layout.widths[figure]
        chunk = values[offset : offset + width]
        if width == 1:
            old = cast(float, entry.get(figure, 0.0))
            entry[figure] = max(old, chunk[0]) if figure in MAXIMA else old + chunk[0]
        else:
            old_list = entry.get(figure)
            if not isinstance(old_list, list):
                old_list = [0.0] * width
            entry[figure] = [a + b for a, b in zip(old_list, chunk, strict=True)]
