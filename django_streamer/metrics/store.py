"""The metrics store this process writes to and reads from, per settings.

One :class:`StoreCache` owns every :class:`~django_streamer.core.metrics.Store`
made here; tests that change the settings call :meth:`StoreCache.reset`.
"""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured

from ..conf import conf, state_dir
from ..core.metrics import Snapshot, Store
from ..core.statedir import UnsafeStateError

__all__ = ["StoreCache", "get_store", "read_snapshot", "stores"]


class StoreCache:
    """The stores made in this process, keyed by the settings that chose them.

    Settings are read again whenever Django says one changed (``conf.generation``,
    so ``override_settings`` works); the common case takes no lock.
    """

    def __init__(self) -> None:
        self._by_dir: dict[tuple[str, int], Store] = {}
        # (conf.generation, the settings read then, the store): one comparison
        # per call while no setting changed (a stream and a slot call this).
        # Public: the stream recorder reads it itself while it is current.
        self.current: tuple[int, tuple[str | None, int], Store] | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        generation = conf.generation
        current = self.current
        if current is not None and current[0] == generation:
            return current[2]
        key = (conf.STREAMER_METRICS_DIR, conf.STREAMER_METRICS_MAX_NAMES)
        if current is not None and current[1] == key:
            self.current = (generation, key, current[2])
            return current[2]
        directory, owned_from = state_dir("STREAMER_METRICS_DIR", "metrics")
        with self._lock:
            store = self._by_dir.get((directory, key[1]))
            if store is None:
                store = Store(directory, max_names=key[1], owned_from=owned_from)
                self._by_dir[(directory, key[1])] = store
            self.current = (generation, key, store)
            return store

    def reset(self) -> None:
        """Forget every store (their files stay; the next call makes new ones)."""
        with self._lock:
            self._by_dir.clear()
            self.current = None


stores = StoreCache()


def get_store() -> Store:
    """The store the current settings name."""
    current = stores.current  # StoreCache.get's first test, without its call
    if current is not None and current[0] == conf.generation:
        return current[2]
    return stores.get()


def read_snapshot() -> Snapshot:
    """The host-wide figures, for the endpoint and the dashboard.

    An unsafe metrics directory is a configuration error, raised where the
    operator looks; streams meanwhile are served without figures.
    """
    try:
        snap = get_store().snapshot()
    except UnsafeStateError as exc:
        raise ImproperlyConfigured(f"STREAMER_METRICS_DIR: {exc}") from exc
    from ..pools import count_busiest_keys  # the pools import the metrics: not at import

    count_busiest_keys(snap.pools)
    return snap
