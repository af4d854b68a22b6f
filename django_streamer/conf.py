"""Settings, read when first used and re-read whenever a setting changes.

Each property is one setting: its name, its default and its type are listed in
the README (a test keeps the two in step). Nothing is copied at import time.
A missing setting costs ``getattr(settings, ...)`` about 1.7 us (Django's
LazySettings raises AttributeError internally), three per stream; the memo
below is emptied by Django's ``setting_changed`` signal, so
``override_settings`` works as if every read went to ``settings``.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    "STREAMER_CHUNK_SIZE": 64 * 1024,
    "STREAMER_FLUSH_INTERVAL": 0.1,
    "STREAMER_X_ACCEL_BUFFERING": True,
    "STREAMER_LIMITER_DIR": None,
    "STREAMER_IP_HEADER": None,
    "STREAMER_RETRY_AFTER": 5,
    "STREAMER_LIMIT_HANDLER": None,
    "STREAMER_METRICS": True,
    "STREAMER_METRICS_DIR": None,
    "STREAMER_METRICS_MAX_NAMES": 100,
    "STREAMER_METRICS_TOKEN": None,
    "STREAMER_METRICS_ALLOW": None,
    "STREAMER_DASHBOARD_PERMISSION": None,
    "STREAMER_REDIS_URL": None,
    "STREAMER_CLUSTER_LEASE": 10,
    "STREAMER_CLUSTER_ON_ERROR": "local",
}


class Settings:
    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        try:
            return self._memo[name]
        except KeyError:
            value = self._memo[name] = getattr(django_settings, name, DEFAULTS[name])
            return value

    def clear(self, **kwargs: Any) -> None:
        self._memo.clear()

    @property
    def STREAMER_CHUNK_SIZE(self) -> int:
        """Bytes per chunk put on the wire; the last chunk may be shorter."""
        value: int = self._get("STREAMER_CHUNK_SIZE")
        return value

    @property
    def STREAMER_FLUSH_INTERVAL(self) -> float:
        """Seconds a buffered byte may wait before it is sent; 0 sends every piece."""
        value: float = self._get("STREAMER_FLUSH_INTERVAL")
        return value

    @property
    def STREAMER_X_ACCEL_BUFFERING(self) -> bool:
        """Send ``X-Accel-Buffering: no`` so nginx passes chunks straight on."""
        value: bool = self._get("STREAMER_X_ACCEL_BUFFERING")
        return value

    @property
    def STREAMER_LIMITER_DIR(self) -> str | None:
        """Where host-scope pools keep their lock files (None: a per-project temp dir)."""
        value: str | None = self._get("STREAMER_LIMITER_DIR")
        return value

    @property
    def STREAMER_IP_HEADER(self) -> str | None:
        """A ``request.META`` key holding the client address set by a trusted proxy."""
        value: str | None = self._get("STREAMER_IP_HEADER")
        return value

    @property
    def STREAMER_RETRY_AFTER(self) -> int:
        """Seconds sent in ``Retry-After`` with a rejection, unless the decorator says."""
        value: int = self._get("STREAMER_RETRY_AFTER")
        return value

    @property
    def STREAMER_LIMIT_HANDLER(self) -> str | None:
        """Dotted path of a ``(request, rejection) -> response`` for every rejection."""
        value: str | None = self._get("STREAMER_LIMIT_HANDLER")
        return value

    @property
    def STREAMER_METRICS(self) -> bool:
        """Record streams and pools in the metrics registry."""
        value: bool = self._get("STREAMER_METRICS")
        return value

    @property
    def STREAMER_METRICS_DIR(self) -> str | None:
        """Where every process's metrics file lives (None: a per-project temp dir)."""
        value: str | None = self._get("STREAMER_METRICS_DIR")
        return value

    @property
    def STREAMER_METRICS_MAX_NAMES(self) -> int:
        """Distinct stream (and pool) names kept; later ones count as ``other``."""
        value: int = self._get("STREAMER_METRICS_MAX_NAMES")
        return value

    @property
    def STREAMER_METRICS_TOKEN(self) -> str | None:
        """Bearer token the metrics endpoint requires, if set."""
        value: str | None = self._get("STREAMER_METRICS_TOKEN")
        return value

    @property
    def STREAMER_METRICS_ALLOW(self) -> list[str] | None:
        """Addresses or CIDR networks allowed to read the metrics endpoint, if set."""
        value: list[str] | None = self._get("STREAMER_METRICS_ALLOW")
        return value

    @property
    def STREAMER_DASHBOARD_PERMISSION(self) -> str | None:
        """Dotted path of ``(request) -> bool``, checked after the staff check."""
        value: str | None = self._get("STREAMER_DASHBOARD_PERMISSION")
        return value

    @property
    def STREAMER_REDIS_URL(self) -> str | None:
        """Redis for cluster-scope pools, e.g. ``redis://127.0.0.1:6379/0``."""
        value: str | None = self._get("STREAMER_REDIS_URL")
        return value

    @property
    def STREAMER_CLUSTER_LEASE(self) -> float:
        """Seconds a cluster slot lives without renewal (a dead host's slots come back then)."""
        value: float = self._get("STREAMER_CLUSTER_LEASE")
        return value

    @property
    def STREAMER_CLUSTER_ON_ERROR(self) -> str:
        """While Redis is unreachable: ``"local"`` (host pool), ``"open"`` or ``"closed"``."""
        value: str = self._get("STREAMER_CLUSTER_ON_ERROR")
        return value


conf = Settings()


def default_state_dir(*parts: str) -> str:
    """``/dev/shm/django-streamer-<uid>/<DJANGO_SETTINGS_MODULE>/...``, or the temp dir.

    Memory-backed where Linux offers it: the metrics files are written
    constantly and never need to reach a disk. Keyed by the settings module so
    that different projects on one host never share pools or metrics.
    """
    import tempfile

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    project = getattr(django_settings, "SETTINGS_MODULE", None) or "default"
    return os.path.join(base, f"django-streamer-{os.getuid()}", project, *parts)


setting_changed.connect(conf.clear, dispatch_uid="django_streamer.conf")
