"""The metrics registry, Django side: the store wired to streams and pools, and read out.

- :mod:`.store`: which store the settings name (:func:`get_store`), one cache;
- :mod:`.wiring`: :func:`stream_recorder` and :class:`PoolRecorder`, what
  ``AppConfig.ready()`` plugs into streams and limiter pools;
- :mod:`.dashboard`: the admin dashboard's JSON (:func:`snapshot_json`);
- :mod:`.collector`: the Prometheus collector and the endpoint's body;
- :mod:`.mirror`: prometheus_client's multiprocess mode;
- :mod:`.fleet`: the dashboard's fleet view, every host through Redis.

Nothing here runs at import: no file is opened and no thread started until
the first stream. The figures themselves live in :mod:`django_streamer.core.metrics`.
"""

from __future__ import annotations

from .collector import StreamerCollector, register_with_prometheus, render
from .dashboard import active_rates, snapshot_json
from .mirror import ensure_mirror, open_mirror_lock, write_multiprocess_mirror
from .store import get_store, read_snapshot
from .wiring import PoolRecorder, stream_recorder

__all__ = [
    "PoolRecorder",
    "StreamerCollector",
    "active_rates",
    "ensure_mirror",
    "get_store",
    "open_mirror_lock",
    "read_snapshot",
    "register_with_prometheus",
    "render",
    "snapshot_json",
    "stream_recorder",
    "write_multiprocess_mirror",
]
