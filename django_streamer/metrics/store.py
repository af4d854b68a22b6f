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

    Settings are read on every call (``override_settings`` works); the common
    case, the same settings as last time, takes no lock.
    """

    def __init__(self) -> None:
        self._by_dir: dict[tuple[str, int], Store] = {}
        self._current: tuple[tuple[str | None, int], Store] | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        key = (conf.STREAMER_METRICS_DIR, conf.STREAMER_METRICS_MAX_NAMES)
        current = self._current
        if current is not None and current[0] == key:
            return current[1]
        directory, owned_from = state_dir("STREAMER_METRICS_DIR", "metrics")
        with self._lock:
            store = self._by_dir.get((directory, key[1]))
            if store is None:
                store = Store(directory, max_names=key[1], owned_from=owned_from)
                self._by_dir[(directory, key[1])] = store
            self._current = (key, store)
            return store

    def reset(self) -> None:
        """Forget every store (their files stay; the next call makes new ones)."""
        with self._lock:
            self._by_dir.clear()
            self._current = None


stores = StoreCache()


def get_store() -> Store:
    """The store the current settings name."""
    return stores.get()


def read_snapshot() -> Snapshot:
    """The host-wide figures, for the endpoint and the dashboard.

    An unsafe metrics directory is a configuration error, raised where the
    operator looks; streams meanwhile are served without figures.
    """
    try:
        return get_store().snapshot()
    except UnsafeStateError as exc:
        raise ImproperlyConfigured(f"STREAMER_METRICS_DIR: {exc}") from exc
