"""The dashboard's JSON API (documented in the README's "The dashboard").

Every figure the page shows is computed here; the page computes none.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from ..conf import conf
from ..core.metrics import OUTCOMES, Snapshot
from .store import read_snapshot

__all__ = ["RateTracker", "active_rates", "rates", "render_json", "snapshot_json"]

_Key = tuple[object, object, object]


class RateTracker:
    """Throughput now, per active stream, between this process's snapshots.

    The bytes a stream sent since the previous snapshot divided by the time
    between them (its whole life when it is new here). So a stalled stream
    reads 0, and a name with no active stream reads 0. What it remembers is
    bounded by the active-streams table.
    """

    def __init__(self) -> None:
        self._seen: dict[_Key, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def active(self, snap: Snapshot) -> list[dict[str, Any]]:
        """The active streams, oldest first, each with its ``bytes_per_second`` now."""
        now = snap.taken_at
        out = []
        seen: dict[_Key, tuple[float, float]] = {}
        with self._lock:
            for a in sorted(snap.active, key=lambda a: cast(float, a["started"])):
                key = (a["pid"], a["started"], a["stream"])
                sent = cast(float, a["bytes"])
                then, before = self._seen.get(key, (cast(float, a["started"]), 0.0))
                seen[key] = (now, sent)
                entry = {k: a[k] for k in ("stream", "path", "pid", "started")}
                rate = max(sent - before, 0.0) / max(now - then, 1e-6)
                out.append({**entry, "bytes": int(sent), "bytes_per_second": rate})
            self._seen = seen  # only streams still active
        return out

    def reset(self) -> None:
        with self._lock:
            self._seen = {}


rates = RateTracker()


def active_rates(snap: Snapshot) -> list[dict[str, Any]]:
    """The active streams, oldest first, each with its ``bytes_per_second`` now."""
    return rates.active(snap)


def _num(entry: dict[str, Any], figure: str) -> float:
    return float(entry.get(figure, 0.0))


def _average(entry: dict[str, Any], total: str, count: str) -> float | None:
    n = _num(entry, count)
    return _num(entry, total) / n if n else None


def _stream(entry: dict[str, Any], throughput: float) -> dict[str, Any]:
    chunks = _num(entry, "chunks")
    sent = _num(entry, "bytes")
    uncompressed = _num(entry, "bytes_uncompressed")
    compressed = _num(entry, "bytes_compressed")
    counts = (
        *("started", "active", *OUTCOMES, "rejected", "bytes"),
        *("bytes_uncompressed", "bytes_compressed", "chunks"),
    )
    return {
        **{figure: int(_num(entry, figure)) for figure in counts},
        "chunk_size_max": int(_num(entry, "chunk_max")),
        "chunk_size_avg": sent / chunks if chunks else 0.0,
        # Source bytes per wire byte of the compressed streams only: a name whose
        # streams are partly compressed is not diluted by the others.
        "compression_ratio": uncompressed / compressed if uncompressed and compressed else None,
        "ttfb_avg": _average(entry, "ttfb_sum", "ttfb_count"),
        "duration_avg": _average(entry, "duration_sum", "duration_count"),
        "bytes_per_second": throughput,
    }


def _pool(entry: dict[str, Any]) -> dict[str, Any]:
    counts = ("in_use", "limit", "admitted", "rejected")
    busiest = entry.get("busiest")
    return {
        **{figure: int(_num(entry, figure)) for figure in counts},
        # The limit is per key: this is what meets it. None where not counted
        # (process pools; cluster pools, whose keys are counted at scrape time).
        "busiest_key": None if busiest is None else int(busiest),
        "wait_avg": _average(entry, "wait_sum", "wait_count") or 0.0,
    }


def render_json(snap: Snapshot, active: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON of figures ``snap`` and its ``active`` streams (with their rates)."""
    throughput: dict[str, float] = {}
    for a in active:
        throughput[a["stream"]] = throughput.get(a["stream"], 0.0) + a["bytes_per_second"]
    return {
        "time": snap.taken_at,
        "processes": snap.processes,
        "streams": {
            name: _stream(e, throughput.get(name, 0.0)) for name, e in sorted(snap.streams.items())
        },
        "pools": {name: _pool(e) for name, e in sorted(snap.pools.items())},
        "active": active,
        "active_hidden": snap.active_hidden,
        "store_errors": snap.store_errors,
    }


def snapshot_json(snapshot: Snapshot | None = None) -> dict[str, Any]:
    """The dashboard's JSON API (documented in the README): this host, or the fleet."""
    snap = snapshot or read_snapshot()
    if conf.STREAMER_FLEET:
        from .fleet import fleet_json  # the fleet view builds on this module

        return fleet_json(snap)
    return render_json(snap, rates.active(snap))
