"""System checks for the django-streamer settings (``manage.py check``).

Registered by ``AppConfig.ready()``. A value's type and range are judged by
conf.py's validators (the same message a request would raise); this module
adds what only a check can afford: importing dotted paths, looking at
directories (without creating them), resolving URLs, and warnings.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from .conf import RENAMED, conf, state_dir
from .core.statedir import check_usable_dir
from .extras import install_hint, missing

# One id and hint per setting whose value is wrong (its type or range).
VALUE_CHECKS: dict[str, tuple[str, str]] = {
    "STREAMER_CHUNK_SIZE": (
        "django_streamer.E001",
        "Set it to a byte count such as 65536 (64 KiB), or remove it.",
    ),
    "STREAMER_FLUSH_INTERVAL": (
        "django_streamer.E002",
        "Use 0.1 for 100 ms, or 0 to send every piece as it comes.",
    ),
    "STREAMER_X_ACCEL_BUFFERING": (
        "django_streamer.E003",
        "True sends 'X-Accel-Buffering: no' so nginx does not buffer streams.",
    ),
    "STREAMER_LIMITER_DIR": (
        "django_streamer.E004",
        "Use a directory only the user gunicorn runs as can reach (mode 0700), or None.",
    ),
    "STREAMER_LIMIT_HANDLER": (
        "django_streamer.E005",
        "Give the dotted path of a function (request, rejection) -> response.",
    ),
    "STREAMER_RETRY_AFTER": (
        "django_streamer.E006",
        "Retry-After takes an integer number of seconds, e.g. 5.",
    ),
    "STREAMER_METRICS_MAX_NAMES": (
        "django_streamer.E007",
        "It caps label cardinality; 100 suits most projects.",
    ),
    "STREAMER_METRICS_DIR": (
        "django_streamer.E008",
        "Use a directory only the user every worker runs as can reach (mode 0700), or None.",
    ),
    "STREAMER_METRICS_ALLOW": (
        "django_streamer.E009",
        "Use a list such as ['127.0.0.1', '10.0.0.0/8'].",
    ),
    "STREAMER_DASHBOARD_PERMISSION": (
        "django_streamer.E010",
        "Give the dotted path of a function (request) -> bool.",
    ),
    "STREAMER_METRICS": ("django_streamer.E012", "Use True or False."),
    "STREAMER_IP_HEADER": (
        "django_streamer.E013",
        "Give a request.META key such as 'HTTP_X_FORWARDED_FOR', or None.",
    ),
    "STREAMER_TRUSTED_PROXIES": (
        "django_streamer.E026",
        "List your proxies' addresses or networks, e.g. ['127.0.0.1', '10.0.0.0/8'].",
    ),
    "STREAMER_METRICS_TOKEN": (
        "django_streamer.E014",
        "Give the token as a non-empty str (e.g. from os.environ), or None.",
    ),
    "STREAMER_SEND_TIMEOUT": (
        "django_streamer.E018",
        "Seconds a client may accept no bytes before it is dropped, e.g. 60; None: never.",
    ),
    "STREAMER_REDIS_URL": (
        "django_streamer.E019",
        "Use a URL such as 'redis://127.0.0.1:6379/0' (rediss:// for TLS), or None.",
    ),
    "STREAMER_CLUSTER_LEASE": (
        "django_streamer.E020",
        "Seconds a cluster slot lives without renewal; 10 suits most sites.",
    ),
    "STREAMER_CLUSTER_ON_ERROR": (
        "django_streamer.E021",
        "Use 'local' (fall back to the host pool), 'open' or 'closed'.",
    ),
    "STREAMER_COMPRESSION": (
        "django_streamer.E024",
        "True compresses streams the client accepts compressed; compress= decides per response.",
    ),
    "STREAMER_RANGES": (
        "django_streamer.E031",
        "True answers Range requests for file sources; ranges=False decides per response.",
    ),
    "STREAMER_FLEET_HOST": (
        "django_streamer.E025",
        "Give a name that tells this host from the others, e.g. 'web-2', or None.",
    ),
    "STREAMER_REDIS_PREFIX": (
        "django_streamer.E027",
        "Use a short name for this deployment such as 'shop-prod:', or None (from SECRET_KEY).",
    ),
    "STREAMER_FLEET": (
        "django_streamer.E028",
        "True shows every host on the dashboard (needs STREAMER_REDIS_URL); False this host.",
    ),
    "STREAMER_DRAIN_SPREAD": (
        "django_streamer.E017",
        "Use a few seconds, well below gunicorn's graceful_timeout.",
    ),
    "STREAMER_WRITER_BUFFER": (
        "django_streamer.E016",
        "A byte count such as 262144: what a writer may have waiting before write() blocks.",
    ),
    "STREAMER_SSE_MAX_THREADS": (
        "django_streamer.E030",
        "A thread count such as 1000: sync SSE sources' threads, per process.",
    ),
    "STREAMER_MAX_STREAMS": (
        "django_streamer.E032",
        "Streams served at once, e.g. 1000; None for no cap.",
    ),
    "STREAMER_MAX_STREAMS_SCOPE": (
        "django_streamer.E033",
        "Use 'process', 'host' (every worker of this machine) or 'cluster' (needs Redis).",
    ),
    "STREAMER_WSGI_MAX_FEEDS": (
        "django_streamer.E034",
        "Feeds per process under gthread, well under its threads (e.g. 4 of 16); None: no cap.",
    ),
}
DIRECTORIES = {"STREAMER_LIMITER_DIR": "pools", "STREAMER_METRICS_DIR": "metrics"}
CALLABLES = ("STREAMER_LIMIT_HANDLER", "STREAMER_DASHBOARD_PERMISSION")


def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every setting's value, the directories, the dotted paths, the endpoint's needs."""
    messages: list[checks.CheckMessage] = []
    bad = set()
    for name, (check_id, hint) in VALUE_CHECKS.items():
        problem = conf.problem(name)
        if problem is not None:
            bad.add(name)
            messages.append(checks.Error(problem, hint=hint, id=check_id))
    for name in DIRECTORIES:
        if name not in bad:
            messages += _directory_errors(name)
    for name in CALLABLES:
        if name not in bad:
            messages += _callable_errors(name)
    messages += _endpoint_errors()
    messages += _warnings(bad)
    return messages


def check_security(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W004: the metrics endpoint routed and open to anyone while DEBUG is off."""
    if settings.DEBUG or not _routed():
        return []
    if conf.problem("STREAMER_METRICS_ALLOW") or conf.problem("STREAMER_METRICS_TOKEN"):
        return []  # reported by check_configuration
    if conf.STREAMER_METRICS_TOKEN or conf.STREAMER_METRICS_ALLOW is not None:
        return []
    return [
        checks.Warning(
            "The metrics endpoint is open to anyone while DEBUG is off.",
            hint="Set STREAMER_METRICS_TOKEN (a bearer token) and/or "
            "STREAMER_METRICS_ALLOW (addresses or CIDR networks).",
            id="django_streamer.W004",
        )
    ]


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """All of the above, for tests and callers that want every message at once."""
    return (
        check_configuration(app_configs)
        + check_security(app_configs)
        + check_compression(app_configs)
        + check_middleware(app_configs)
    )


def register() -> None:
    """Called from ``AppConfig.ready()``; registering twice is harmless."""
    checks.register(check_configuration, checks.Tags.compatibility)
    checks.register(check_security, checks.Tags.security)
    checks.register(check_drain, checks.Tags.compatibility)
    checks.register(check_cluster, checks.Tags.compatibility)
    checks.register(check_compression, checks.Tags.compatibility)
    checks.register(check_middleware, checks.Tags.compatibility)


def _directory_errors(name: str) -> list[checks.CheckMessage]:
    if (
        name == "STREAMER_METRICS_DIR"
        and conf.problem("STREAMER_METRICS") is None
        and not conf.STREAMER_METRICS
    ):
        return []
    directory, owned_from = state_dir(name, DIRECTORIES[name])
    problem = check_usable_dir(directory, owned_from=owned_from)
    if problem is None:
        return []
    check_id, hint = VALUE_CHECKS[name]
    return [checks.Error(f"{name} cannot be used: {problem}.", hint=hint, id=check_id)]


def _callable_errors(name: str) -> list[checks.CheckMessage]:
    path = getattr(conf, name)
    if path is None:
        return []
    try:
        ok = callable(import_string(path))
    except (ImportError, TypeError, ValueError, AttributeError):
        ok = False
    if ok:
        return []
    check_id, hint = VALUE_CHECKS[name]
    return [checks.Error(f"{name} {path!r} does not import as a callable.", hint=hint, id=check_id)]


def _endpoint_errors() -> list[checks.CheckMessage]:
    if not _routed():
        return []
    problem = missing("prometheus_client")
    if problem is None:
        return []
    return [
        checks.Error(
            "django_streamer.urls is routed but prometheus_client is not installed.",
            hint=install_hint("prometheus_client"),
            id="django_streamer.E011",
        )
    ]


def _warnings(bad: set[str]) -> list[checks.CheckMessage]:
    from django.core.handlers.asgi import ASGIHandler

    messages: list[checks.CheckMessage] = []
    message_size = ASGIHandler.chunk_size
    chunk_size = 0 if "STREAMER_CHUNK_SIZE" in bad else conf.STREAMER_CHUNK_SIZE
    if chunk_size > message_size:
        messages.append(
            checks.Warning(
                f"STREAMER_CHUNK_SIZE is {chunk_size}, above the {message_size} "
                "bytes Django's ASGI handler sends per message: under ASGI each chunk is "
                "re-split there, and the larger buffer buys nothing.",
                hint=f"Use {message_size} or less (silence this if you only serve WSGI).",
                id="django_streamer.W001",
            )
        )
    if "STREAMER_FLUSH_INTERVAL" not in bad and conf.STREAMER_FLUSH_INTERVAL > 5:
        messages.append(
            checks.Warning(
                f"STREAMER_FLUSH_INTERVAL is {conf.STREAMER_FLUSH_INTERVAL} s: bytes may sit "
                "that long before a client sees them, and proxies may time the stream out.",
                hint="Values between 0.05 and 1 second suit most streams.",
                id="django_streamer.W002",
            )
        )
    header = None if "STREAMER_IP_HEADER" in bad else conf.STREAMER_IP_HEADER
    if header is not None and not (header.startswith("HTTP_") or header.isupper()):
        messages.append(
            checks.Warning(
                f"STREAMER_IP_HEADER {header!r} does not look like a request.META key.",
                hint="META keys are upper case with an HTTP_ prefix: "
                "'X-Real-IP' is 'HTTP_X_REAL_IP'.",
                id="django_streamer.W003",
            )
        )
    return messages


def _routed() -> bool:
    try:
        reverse("django_streamer:metrics")
    except NoReverseMatch:
        return False
    return True


def check_drain(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W008: a setting under its old name.

    (W005, the spread against gunicorn's real ``graceful_timeout``, is checked
    where that is known: at worker start, ``drain_hooks.warn_if_spread_too_long``.)
    """
    messages: list[checks.CheckMessage] = []
    for new, old in RENAMED.items():
        if hasattr(settings, old):
            also = f"; {new} is set too, so {old} is ignored" if hasattr(settings, new) else ""
            messages.append(
                checks.Warning(
                    f"{old} is deprecated: it is a spread of SSE reconnects, not a timeout{also}.",
                    hint=f"Rename it to {new}.",
                    id="django_streamer.W008",
                )
            )
    return messages


def check_cluster(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Cluster settings are valid, and set when a routed view uses scope='cluster'."""
    from .cluster import settings_errors

    errors: list[checks.CheckMessage] = []
    if settings_errors():
        return errors  # E019-E021 report the values
    if conf.STREAMER_REDIS_URL:
        if missing("redis") is not None:
            errors.append(
                checks.Error(
                    "STREAMER_REDIS_URL is set but redis-py is not installed.",
                    hint=install_hint("redis"),
                    id="django_streamer.E022",
                )
            )
    elif conf.problem("STREAMER_FLEET") is None and conf.STREAMER_FLEET:
        errors.append(
            checks.Error(
                "STREAMER_FLEET is on but STREAMER_REDIS_URL is not set: the hosts share "
                "their figures through Redis.",
                hint="Set STREAMER_REDIS_URL = 'redis://host:6379/0', or STREAMER_FLEET = False.",
                id="django_streamer.E029",
            )
        )
    if (
        not conf.STREAMER_REDIS_URL
        and conf.problem("STREAMER_MAX_STREAMS_SCOPE") is None
        and conf.problem("STREAMER_MAX_STREAMS") is None
        and conf.STREAMER_MAX_STREAMS is not None
        and conf.STREAMER_MAX_STREAMS_SCOPE == "cluster"
    ):
        errors.append(
            checks.Error(
                "STREAMER_MAX_STREAMS_SCOPE is 'cluster' but STREAMER_REDIS_URL is not set.",
                hint="Set STREAMER_REDIS_URL = 'redis://host:6379/0', or use scope 'host'.",
                id="django_streamer.E035",
            )
        )
    if not conf.STREAMER_REDIS_URL and (views := _cluster_views()):
        errors.append(
            checks.Error(
                f"{', '.join(views)} {'uses' if len(views) == 1 else 'use'} "
                "limit_concurrency(scope='cluster') but STREAMER_REDIS_URL is not set.",
                hint="Set STREAMER_REDIS_URL = 'redis://host:6379/0', or use scope='host'.",
                id="django_streamer.E023",
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


# Middleware that compresses responses: Django's own, and the packages people use.
COMPRESSING_MIDDLEWARE = (
    "django.middleware.gzip.GZipMiddleware",
    "django_http_compression.middleware.HttpCompressionMiddleware",
    "compression_middleware.middleware.CompressionMiddleware",
    "django_brotli.middleware.BrotliMiddleware",
)


def check_compression(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W006: a compressing middleware, redundant for our streams and stalling others;
    W009: compression on without the codings its extra brings."""
    messages = _missing_codings()
    for path in getattr(settings, "MIDDLEWARE", None) or ():
        if _compresses(path):
            messages.append(
                checks.Warning(
                    f"{path} compresses responses. Streams that compress themselves pass "
                    "through it untouched, so it is redundant for them; other streams it "
                    "compresses with no regard for flush_interval (GZipMiddleware never "
                    "flushes, so a live stream stalls inside it).",
                    hint="Remove it and set STREAMER_COMPRESSION = True: stream_response() "
                    "then compresses with a flush whenever flush_interval forces one.",
                    id="django_streamer.W006",
                )
            )
    return messages


def _compresses(path: object) -> bool:
    if not isinstance(path, str):
        return False
    if path in COMPRESSING_MIDDLEWARE:
        return True
    from django.middleware.gzip import GZipMiddleware

    try:
        cls = import_string(path)
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, GZipMiddleware)


MIDDLEWARE_PATH = "django_streamer.middleware.StreamerMiddleware"


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W007: without StreamerMiddleware a source failing at once is not Django's 500."""
    if MIDDLEWARE_PATH in (getattr(settings, "MIDDLEWARE", None) or ()):
        return []
    return [
        checks.Warning(
            f"{MIDDLEWARE_PATH} is not in MIDDLEWARE: streams cannot see their request, so "
            "they are not named after their view (metrics show 'unnamed' unless name= is "
            "given), not compressed for the client's Accept-Encoding, and one whose source "
            "fails before its first byte cannot get Django's 500 response.",
            hint=f"Add {MIDDLEWARE_PATH!r} at the end of MIDDLEWARE.",
            id="django_streamer.W007",
        )
    ]


def _missing_codings() -> list[checks.CheckMessage]:
    from .core.compression.codecs import available_codings

    if conf.problem("STREAMER_COMPRESSION") is not None or not conf.STREAMER_COMPRESSION:
        return []
    lacking = [coding for coding in ("zstd", "br") if coding not in available_codings()]
    if not lacking:
        return []
    return [
        checks.Warning(
            f"STREAMER_COMPRESSION is on but {' and '.join(lacking)} cannot be produced here: "
            "clients that accept them get gzip, slower and larger.",
            hint=install_hint("brotli") + " (zstandard and brotli).",
            id="django_streamer.W009",
        )
    ]
