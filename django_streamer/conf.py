"""Settings, read when first used, validated once per value, re-read when a setting changes.

Each property is one setting. Its name, default and type are listed in the
README, and tests/test_docs.py checks all three against this module. Nothing is
copied at import time: a value is read and validated on first use, kept (in the
instance, see :class:`Settings`) until Django's ``setting_changed`` signal, so
``override_settings`` works as if every read went to ``settings``.

gunicorn runs no system checks, so a bad value must fail where it is read, with
an ``ImproperlyConfigured`` that names the setting. The system checks
(checks.py) ask :meth:`Settings.problem` for the very same message.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .core import validate

DEFAULTS: dict[str, Any] = {
    "STREAMER_CHUNK_SIZE": 64 * 1024,
    "STREAMER_FLUSH_INTERVAL": 0.1,
    "STREAMER_X_ACCEL_BUFFERING": True,
    "STREAMER_SEND_TIMEOUT": 60,
    "STREAMER_COMPRESSION": False,
    "STREAMER_RANGES": True,
    "STREAMER_LIMITER_DIR": None,
    "STREAMER_IP_HEADER": None,
    "STREAMER_TRUSTED_PROXIES": ["127.0.0.1", "::1"],
    "STREAMER_RETRY_AFTER": 5,
    "STREAMER_LIMIT_HANDLER": None,
    "STREAMER_METRICS": True,
    "STREAMER_METRICS_DIR": None,
    "STREAMER_METRICS_MAX_NAMES": 100,
    "STREAMER_METRICS_TOKEN": None,
    "STREAMER_METRICS_ALLOW": None,
    "STREAMER_DASHBOARD_PERMISSION": None,
    "STREAMER_WRITER_BUFFER": 256 * 1024,
    "STREAMER_DRAIN_SPREAD": 5,
    "STREAMER_SSE_MAX_THREADS": 1000,
    "STREAMER_MAX_STREAMS": 1000,
    "STREAMER_MAX_STREAMS_SCOPE": "host",
    "STREAMER_WSGI_MAX_FEEDS": 4,
    "STREAMER_REDIS_URL": None,
    "STREAMER_CLUSTER_LEASE": 10,
    "STREAMER_CLUSTER_ON_ERROR": "local",
    "STREAMER_REDIS_PREFIX": None,
    "STREAMER_FLEET": False,
    "STREAMER_FLEET_HOST": None,
}

# Old names still read (with a deprecation warning, check W008) when the new one is unset.
RENAMED: dict[str, str] = {"STREAMER_DRAIN_SPREAD": "STREAMER_DRAIN_TIMEOUT"}

Validator = Callable[..., Any]


def _optional(check: Validator) -> Validator:
    def optional(value: object, *, what: str) -> Any:
        return None if value is None else check(value, what=what)

    return optional


VALIDATORS: dict[str, Validator] = {
    "STREAMER_CHUNK_SIZE": validate.positive_int,
    "STREAMER_FLUSH_INTERVAL": validate.non_negative_number,
    "STREAMER_X_ACCEL_BUFFERING": validate.boolean,
    "STREAMER_COMPRESSION": validate.boolean,
    "STREAMER_RANGES": validate.boolean,
    "STREAMER_LIMITER_DIR": validate.optional_path,
    "STREAMER_IP_HEADER": validate.optional_str,
    "STREAMER_TRUSTED_PROXIES": validate.network_list,
    "STREAMER_RETRY_AFTER": _optional(validate.whole_seconds),
    "STREAMER_LIMIT_HANDLER": validate.optional_str,
    "STREAMER_METRICS": validate.boolean,
    "STREAMER_METRICS_DIR": validate.optional_path,
    "STREAMER_METRICS_MAX_NAMES": validate.positive_int,
    "STREAMER_METRICS_TOKEN": validate.optional_str,
    "STREAMER_METRICS_ALLOW": _optional(validate.network_list),
    "STREAMER_DASHBOARD_PERMISSION": validate.optional_str,
    "STREAMER_WRITER_BUFFER": validate.positive_int,
    "STREAMER_DRAIN_SPREAD": validate.non_negative_number,
    "STREAMER_SSE_MAX_THREADS": validate.positive_int,
    "STREAMER_MAX_STREAMS": _optional(validate.positive_int),
    "STREAMER_MAX_STREAMS_SCOPE": lambda value, *, what: validate.one_of(
        value, ("process", "host", "cluster"), what=what
    ),
    "STREAMER_WSGI_MAX_FEEDS": _optional(validate.positive_int),
    "STREAMER_SEND_TIMEOUT": _optional(validate.positive_number),
    "STREAMER_REDIS_URL": validate.optional_redis_url,
    "STREAMER_CLUSTER_LEASE": validate.positive_number,
    "STREAMER_CLUSTER_ON_ERROR": lambda value, *, what: validate.one_of(
        value, ("local", "open", "closed"), what=what
    ),
    "STREAMER_REDIS_PREFIX": validate.optional_redis_prefix,
    "STREAMER_FLEET": validate.boolean,
    "STREAMER_FLEET_HOST": validate.optional_str,
}


class Settings:
    """The app's settings, each validated on first read and kept until one changes.

    Each is a ``cached_property``: once read, it lives in the instance's
    ``__dict__``, so a read on the hot path is an attribute lookup, not a call.
    ``clear()`` (connected to Django's ``setting_changed``) drops them all.
    """

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}
        # Bumped whenever the memo is emptied: what is derived from settings
        # (the metrics store) is reused while it stays the same.
        self.generation = 0

    def _get(self, name: str) -> Any:
        try:
            return self._memo[name]
        except KeyError:
            pass
        source = name
        if not hasattr(django_settings, name) and hasattr(django_settings, RENAMED.get(name, "")):
            source = RENAMED[name]
        raw = getattr(django_settings, source, DEFAULTS[name])
        try:
            value = VALIDATORS[name](raw, what=f"setting {source}")
        except ValueError as exc:
            raise ImproperlyConfigured(f"{exc}.") from None
        self._memo[name] = value
        return value

    def problem(self, name: str) -> str | None:
        """What is wrong with the setting ``name``, or None; never raises."""
        try:
            self._get(name)
        except ImproperlyConfigured as exc:
            return str(exc)
        return None

    def clear(self, *, setting: str = "", **kwargs: Any) -> None:
        self._memo.clear()
        for name in DEFAULTS:  # the values the properties keep in the instance
            self.__dict__.pop(name, None)
        self.generation += 1
        if setting == "INSTALLED_APPS":
            warn_if_not_installed.cache_clear()

    @cached_property
    def STREAMER_CHUNK_SIZE(self) -> int:
        """Bytes per chunk put on the wire; the last chunk may be shorter."""
        value: int = self._get("STREAMER_CHUNK_SIZE")
        return value

    @cached_property
    def STREAMER_FLUSH_INTERVAL(self) -> float:
        """Seconds a buffered byte may wait before it is sent; 0 sends every piece."""
        value: float = self._get("STREAMER_FLUSH_INTERVAL")
        return value

    @cached_property
    def STREAMER_SEND_TIMEOUT(self) -> float | None:
        """Seconds a client may accept no bytes before it is dropped; None: never."""
        value: float | None = self._get("STREAMER_SEND_TIMEOUT")
        return value

    @cached_property
    def STREAMER_X_ACCEL_BUFFERING(self) -> bool:
        """Send ``X-Accel-Buffering: no`` so nginx passes chunks straight on."""
        value: bool = self._get("STREAMER_X_ACCEL_BUFFERING")
        return value

    @cached_property
    def STREAMER_COMPRESSION(self) -> bool:
        """Compress streams (zstd, br, gzip) the client accepts; ``compress=`` overrides."""
        value: bool = self._get("STREAMER_COMPRESSION")
        return value

    @cached_property
    def STREAMER_RANGES(self) -> bool:
        """Answer ``Range`` requests for file sources; ``ranges=`` turns it off per response."""
        value: bool = self._get("STREAMER_RANGES")
        return value

    @cached_property
    def STREAMER_LIMITER_DIR(self) -> str | None:
        """Where host-scope pools keep their lock files (None: a per-project temp dir)."""
        value: str | None = self._get("STREAMER_LIMITER_DIR")
        return value

    @cached_property
    def STREAMER_IP_HEADER(self) -> str | None:
        """A ``request.META`` key holding the client address set by a trusted proxy."""
        value: str | None = self._get("STREAMER_IP_HEADER")
        return value

    @cached_property
    def STREAMER_TRUSTED_PROXIES(self) -> list[str]:
        """Peers (addresses or CIDR networks) whose ``STREAMER_IP_HEADER`` is believed."""
        value: list[str] = self._get("STREAMER_TRUSTED_PROXIES")
        return value

    @cached_property
    def STREAMER_RETRY_AFTER(self) -> int | None:
        """Seconds sent in ``Retry-After`` with a rejection, unless the decorator says."""
        value: int | None = self._get("STREAMER_RETRY_AFTER")
        return value

    @cached_property
    def STREAMER_LIMIT_HANDLER(self) -> str | None:
        """Dotted path of a ``(request, rejection) -> response`` for every rejection."""
        value: str | None = self._get("STREAMER_LIMIT_HANDLER")
        return value

    @cached_property
    def STREAMER_METRICS(self) -> bool:
        """Record streams and pools in the metrics registry."""
        value: bool = self._get("STREAMER_METRICS")
        return value

    @cached_property
    def STREAMER_METRICS_DIR(self) -> str | None:
        """Where every process's metrics file lives (None: a per-project temp dir)."""
        value: str | None = self._get("STREAMER_METRICS_DIR")
        return value

    @cached_property
    def STREAMER_METRICS_MAX_NAMES(self) -> int:
        """Distinct stream (and pool) names kept; later ones count as ``other``."""
        value: int = self._get("STREAMER_METRICS_MAX_NAMES")
        return value

    @cached_property
    def STREAMER_METRICS_TOKEN(self) -> str | None:
        """Bearer token the metrics endpoint requires, if set."""
        value: str | None = self._get("STREAMER_METRICS_TOKEN")
        return value

    @cached_property
    def STREAMER_METRICS_ALLOW(self) -> list[str] | None:
        """Addresses or CIDR networks allowed to read the metrics endpoint, if set."""
        value: list[str] | None = self._get("STREAMER_METRICS_ALLOW")
        return value

    @cached_property
    def STREAMER_DASHBOARD_PERMISSION(self) -> str | None:
        """Dotted path of ``(request) -> bool``, checked after the staff check."""
        value: str | None = self._get("STREAMER_DASHBOARD_PERMISSION")
        return value

    @cached_property
    def STREAMER_WRITER_BUFFER(self) -> int:
        """Bytes a ``stream_writer`` producer may have waiting before ``write()`` blocks."""
        value: int = self._get("STREAMER_WRITER_BUFFER")
        return value

    @cached_property
    def STREAMER_DRAIN_SPREAD(self) -> float:
        """Seconds over which a drain spreads the ends of SSE streams (their reconnects)."""
        value: float = self._get("STREAMER_DRAIN_SPREAD")
        return value

    @cached_property
    def STREAMER_SSE_MAX_THREADS(self) -> int:
        """SSE source threads a process may hold before ``sse_response`` answers 503."""
        value: int = self._get("STREAMER_SSE_MAX_THREADS")
        return value

    @cached_property
    def STREAMER_MAX_STREAMS(self) -> int | None:
        """Streams served at once (at ``STREAMER_MAX_STREAMS_SCOPE``), then 503; None: no cap."""
        value: int | None = self._get("STREAMER_MAX_STREAMS")
        return value

    @cached_property
    def STREAMER_MAX_STREAMS_SCOPE(self) -> str:
        """Where ``STREAMER_MAX_STREAMS`` counts: ``"process"``, ``"host"`` or ``"cluster"``."""
        value: str = self._get("STREAMER_MAX_STREAMS_SCOPE")
        return value

    @cached_property
    def STREAMER_WSGI_MAX_FEEDS(self) -> int | None:
        """SSE feeds a thread-per-request (WSGI) process serves at once; past it, 503."""
        value: int | None = self._get("STREAMER_WSGI_MAX_FEEDS")
        return value

    @cached_property
    def STREAMER_REDIS_URL(self) -> str | None:
        """Redis for cluster-scope pools, e.g. ``redis://127.0.0.1:6379/0``."""
        value: str | None = self._get("STREAMER_REDIS_URL")
        return value

    @cached_property
    def STREAMER_CLUSTER_LEASE(self) -> float:
        """Seconds a cluster slot lives without renewal (a dead host's slots come back then)."""
        value: float = self._get("STREAMER_CLUSTER_LEASE")
        return value

    @cached_property
    def STREAMER_CLUSTER_ON_ERROR(self) -> str:
        """While Redis is unreachable: ``"local"`` (host pool), ``"open"`` or ``"closed"``."""
        value: str = self._get("STREAMER_CLUSTER_ON_ERROR")
        return value

    @cached_property
    def STREAMER_REDIS_PREFIX(self) -> str | None:
        """What every Redis key and channel starts with; None: from SECRET_KEY (see below)."""
        value: str | None = self._get("STREAMER_REDIS_PREFIX")
        return value

    @cached_property
    def STREAMER_FLEET(self) -> bool:
        """Publish this host's figures to Redis, and show every host's on the dashboard."""
        value: bool = self._get("STREAMER_FLEET")
        return value

    @cached_property
    def STREAMER_FLEET_HOST(self) -> str | None:
        """This host's name in the dashboard's fleet view; None: the machine's host name."""
        value: str | None = self._get("STREAMER_FLEET_HOST")
        return value


conf = Settings()


def redis_prefix() -> str:
    """``STREAMER_REDIS_PREFIX``, or ``streamer:`` and a digest of ``SECRET_KEY``.

    Deployments that share a Redis but not a ``SECRET_KEY`` (staging and
    production) then share no pool, channel or fleet view. The digest is a
    salted HMAC, so the key cannot be recovered from what Redis shows.
    """
    explicit = conf.STREAMER_REDIS_PREFIX
    if explicit is not None:
        return explicit
    from django.utils.crypto import salted_hmac

    digest = salted_hmac("django_streamer.redis_prefix", "", algorithm="sha256").hexdigest()
    return f"streamer:{digest[:12]}:"


def state_dir(setting: str, part: str) -> tuple[str, str | None]:
    """The directory a state setting names, and where its privacy checks start.

    A directory set by the user is checked on its own; the default also has
    every directory down from the per-user ``django-streamer-<uid>`` checked.
    """
    value = getattr(conf, setting)
    if value:
        return os.fspath(value), None
    return default_state_dir(part), os.path.dirname(default_state_dir())


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


NOT_INSTALLED = (
    "django_streamer must be in INSTALLED_APPS: without it the metrics registry "
    "is never wired and the dashboard is not served."
)


def is_installed() -> bool:
    from django.apps import apps

    return apps.is_installed("django_streamer")


@functools.cache
def warn_if_not_installed() -> bool:
    """Log one warning per process when the app is not installed; True if it is.

    Cached, so calling it from every ``stream_response`` costs a dict lookup
    after the first call. ``override_settings(INSTALLED_APPS=...)`` clears it.
    """
    if is_installed():
        return True
    logging.getLogger("django_streamer").warning(NOT_INSTALLED)
    return False


setting_changed.connect(conf.clear, dispatch_uid="django_streamer.conf")
