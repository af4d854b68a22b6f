"""System checks for the django-streamer settings (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.core import checks

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
    return errors


def _uses_asgi() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "ASGI_APPLICATION", None))
