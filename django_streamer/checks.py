"""System checks for the django-streamer settings (``manage.py check``)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from django.conf import settings
from django.core import checks
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from .conf import conf

# Django's ASGIHandler re-splits anything larger into 64 KiB messages.
ASGI_MESSAGE_SIZE = 2**16


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    chunk_size = conf.STREAMER_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        errors.append(
            checks.Error(
                f"STREAMER_CHUNK_SIZE must be a positive int, not {chunk_size!r}.",
                hint="Set it to a byte count such as 65536 (64 KiB), or remove it.",
                id="django_streamer.E001",
            )
        )
    elif chunk_size > ASGI_MESSAGE_SIZE and _uses_asgi():
        errors.append(
            checks.Warning(
                f"STREAMER_CHUNK_SIZE is {chunk_size}, above the {ASGI_MESSAGE_SIZE} bytes "
                "Django's ASGI handler sends per message; it will copy each chunk to split it.",
                hint="Use 65536 or less when serving over ASGI.",
                id="django_streamer.W001",
            )
        )
    interval = conf.STREAMER_FLUSH_INTERVAL
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval >= 0:
        errors.append(
            checks.Error(
                f"STREAMER_FLUSH_INTERVAL must be a number of seconds >= 0, not {interval!r}.",
                hint="Use 0.1 for 100 ms, or 0 to send every piece as it comes.",
                id="django_streamer.E002",
            )
        )
    elif interval > 5:
        errors.append(
            checks.Warning(
                f"STREAMER_FLUSH_INTERVAL is {interval} s: bytes may sit that long "
                "before a client sees them, and proxies may time the stream out.",
                hint="Values between 0.05 and 1 second suit most streams.",
                id="django_streamer.W002",
            )
        )
    if not isinstance(conf.STREAMER_X_ACCEL_BUFFERING, bool):
        errors.append(
            checks.Error(
                "STREAMER_X_ACCEL_BUFFERING must be True or False, "
                f"not {conf.STREAMER_X_ACCEL_BUFFERING!r}.",
                hint="True sends 'X-Accel-Buffering: no' so nginx does not buffer streams.",
                id="django_streamer.E003",
            )
        )
    errors.extend(_check_limiter())
    errors.extend(_check_metrics())
    return errors


def _check_metrics() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    max_names = conf.STREAMER_METRICS_MAX_NAMES
    if isinstance(max_names, bool) or not isinstance(max_names, int) or max_names < 1:
        errors.append(
            checks.Error(
                f"STREAMER_METRICS_MAX_NAMES must be an int >= 1, not {max_names!r}.",
                hint="It caps label cardinality; 100 suits most projects.",
                id="django_streamer.E007",
            )
        )
    errors += _directory_errors(
        "STREAMER_METRICS_DIR",
        conf.STREAMER_METRICS_DIR,
        "Use a directory every worker of this project can write.",
        "django_streamer.E008",
    )
    allow = conf.STREAMER_METRICS_ALLOW
    if allow is not None:
        bad = []
        if isinstance(allow, str) or not isinstance(allow, (list, tuple)):
            bad = [repr(allow)]
        else:
            for net in allow:
                try:
                    ipaddress.ip_network(net, strict=False)
                except (TypeError, ValueError):
                    bad.append(repr(net))
        if bad:
            errors.append(
                checks.Error(
                    f"STREAMER_METRICS_ALLOW has entries that are not addresses or networks: "
                    f"{', '.join(bad)}.",
                    hint="Use a list such as ['127.0.0.1', '10.0.0.0/8'].",
                    id="django_streamer.E009",
                )
            )
    errors += _callable_errors(
        "STREAMER_DASHBOARD_PERMISSION",
        conf.STREAMER_DASHBOARD_PERMISSION,
        "Give the dotted path of a function (request) -> bool.",
        "django_streamer.E010",
    )
    try:
        reverse("django_streamer:metrics")
        routed = True
    except NoReverseMatch:
        routed = False
    if routed:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            errors.append(
                checks.Error(
                    "django_streamer.urls is routed but prometheus_client is not installed.",
                    hint="pip install 'django-streamer[prometheus]'",
                    id="django_streamer.E011",
                )
            )
    if not settings.DEBUG and not conf.STREAMER_METRICS_TOKEN and allow is None and routed:
        errors.append(
            checks.Warning(
                "The metrics endpoint is open to anyone while DEBUG is off.",
                hint="Set STREAMER_METRICS_TOKEN (a bearer token) and/or "
                "STREAMER_METRICS_ALLOW (addresses or CIDR networks).",
                id="django_streamer.W004",
            )
        )
    return errors


def _check_limiter() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    errors += _directory_errors(
        "STREAMER_LIMITER_DIR",
        conf.STREAMER_LIMITER_DIR,
        "Create it and give the user gunicorn runs as write access.",
        "django_streamer.E004",
    )
    errors += _callable_errors(
        "STREAMER_LIMIT_HANDLER",
        conf.STREAMER_LIMIT_HANDLER,
        "Give the dotted path of a function (request, rejection) -> response.",
        "django_streamer.E005",
    )
    retry = conf.STREAMER_RETRY_AFTER
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int) or retry < 0):
        errors.append(
            checks.Error(
                f"STREAMER_RETRY_AFTER must be whole seconds >= 0 or None, not {retry!r}.",
                hint="Retry-After takes an integer number of seconds, e.g. 5.",
                id="django_streamer.E006",
            )
        )
    header = conf.STREAMER_IP_HEADER
    if header is not None and (
        not isinstance(header, str) or not (header.startswith("HTTP_") or header.isupper())
    ):
        errors.append(
            checks.Warning(
                f"STREAMER_IP_HEADER {header!r} does not look like a request.META key.",
                hint="META keys are upper case with an HTTP_ prefix: "
                "'X-Real-IP' is 'HTTP_X_REAL_IP'.",
                id="django_streamer.W003",
            )
        )
    return errors


def _directory_errors(
    setting: str, value: object, hint: str, check_id: str
) -> list[checks.CheckMessage]:
    """A directory setting that is not None must be creatable and writable."""
    if value is None:
        return []
    if not isinstance(value, (str, os.PathLike)):
        return [checks.Error(f"{setting} must be a path, not {value!r}.", hint=hint, id=check_id)]
    try:
        os.makedirs(value, mode=0o700, exist_ok=True)
        writable = os.access(value, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if writable:
        return []
    message = f"{setting} {os.fspath(value)!r} cannot be created or written."
    return [checks.Error(message, hint=hint, id=check_id)]


def _callable_errors(
    setting: str, value: object, hint: str, check_id: str
) -> list[checks.CheckMessage]:
    """A dotted-path setting that is not None must import as a callable."""
    if value is None:
        return []
    try:
        ok = callable(import_string(value))  # type: ignore[arg-type]
    except (ImportError, TypeError, ValueError, AttributeError):
        ok = False
    if ok:
        return []
    message = f"{setting} {value!r} does not import as a callable."
    return [checks.Error(message, hint=hint, id=check_id)]


@checks.register(checks.Tags.compatibility)
def check_cluster(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Cluster settings are valid, and set when a routed view uses scope='cluster'."""
    from .cluster import settings_errors

    hint = "See the README's 'Cluster scope' section."
    errors: list[checks.CheckMessage] = [
        checks.Error(message + ".", hint=hint, id="django_streamer.E012")
        for message in settings_errors()
    ]
    if conf.STREAMER_REDIS_URL:
        try:
            import redis  # noqa: F401
        except ImportError:
            errors.append(
                checks.Error(
                    "STREAMER_REDIS_URL is set but redis-py is not installed.",
                    hint="pip install 'django-streamer[redis]'",
                    id="django_streamer.E013",
                )
            )
    elif _cluster_views():
        errors.append(
            checks.Error(
                f"{', '.join(_cluster_views())} use limit_concurrency(scope='cluster') "
                "but STREAMER_REDIS_URL is not set.",
                hint="Set STREAMER_REDIS_URL = 'redis://host:6379/0', or use scope='host'.",
                id="django_streamer.E014",
            )
        )
    return errors


def _cluster_views() -> list[str]:
    """Pool names of routed views limited at cluster scope."""
    from django.urls import URLPattern, URLResolver, get_resolver

    found: list[str] = []
    pending: list[Any] = list(get_resolver().url_patterns)
    while pending:
        entry = pending.pop()
        if isinstance(entry, URLResolver):
            pending.extend(entry.url_patterns)
        elif isinstance(entry, URLPattern):
            view = entry.callback
            # A class-based view's dispatch may carry the decorator.
            for candidate in (view, getattr(getattr(view, "view_class", None), "dispatch", None)):
                if getattr(candidate, "limit_scope", None) == "cluster":
                    found.append(candidate.limit_pool_name)  # type: ignore[union-attr]
    return sorted(set(found))


def _uses_asgi() -> bool:
    return bool(getattr(settings, "ASGI_APPLICATION", None))
