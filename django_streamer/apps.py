from __future__ import annotations

from django.apps import AppConfig


class DjangoStreamerConfig(AppConfig):
    name = "django_streamer"
    verbose_name = "Streaming"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
