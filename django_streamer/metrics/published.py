"""What a host publishes to Redis for the fleet view, and checking what others published.

Another host's snapshot is read back by every host's dashboard, so it is not
trusted: a buggy or older publisher may write a wrong type, leave a key out or
write ``NaN`` (which Python's ``json`` accepts and browsers do not).
:func:`parse` turns a body into a snapshot only when every figure is where the
merge and the page expect it, a finite number; anything else is unreadable,
and the fleet view lists it as such rather than failing.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..core.metrics import Snapshot
from ..core.metrics.layout import POOL, STREAM, Layout

__all__ = ["build", "parse"]

COUNTS = ("processes", "active_hidden", "store_errors")
TABLES = {"streams": STREAM, "pools": POOL}
ACTIVE_TEXT = ("stream", "path")
ACTIVE_NUMBERS = ("pid", "started", "bytes", "bytes_per_second")


def build(snap: Snapshot, active: list[dict[str, Any]]) -> dict[str, Any]:
    """What a host publishes: its summable figures, and its active streams with rates."""
    return {
        "processes": snap.processes,
        "streams": snap.streams,
        "pools": snap.pools,
        "active_hidden": snap.active_hidden,
        "store_errors": snap.store_errors,
        "active": active,
    }


def parse(body: bytes) -> dict[str, Any] | None:
    """The snapshot in ``body``, or None when it is not one :func:`build` could make."""
    try:
        raw = json.loads(body, parse_constant=_refuse)
    except ValueError:  # not JSON, not UTF-8, or NaN / Infinity
        return None
    return raw if _valid(raw) else None


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not a figure")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figures(entry: object, layout: Layout) -> bool:
    """A row of figures: a name's numbers, and its histograms' per-bucket lists."""
    if not isinstance(entry, dict):
        return False
    for figure, value in entry.items():
        if figure.endswith("_buckets"):
            width = layout.widths.get(figure)  # another release's buckets would not add up
            if not (isinstance(value, list) and len(value) == width and all(map(_number, value))):
                return False
        elif not _number(value):
            return False
    return True


def _active(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(key), str) for key in ACTIVE_TEXT)
        and all(_number(entry.get(key)) for key in ACTIVE_NUMBERS)
    )


def _valid(raw: object) -> bool:
    if not isinstance(raw, dict) or not all(_number(raw.get(key)) for key in COUNTS):
        return False
    for table, layout in TABLES.items():
        rows = raw.get(table)
        if not isinstance(rows, dict) or not all(_figures(e, layout) for e in rows.values()):
            return False
    active = raw.get("active")
    return isinstance(active, list) and all(map(_active, active))
