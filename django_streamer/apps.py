from __future__ import annotations

from django.apps import AppConfig


class DjangoStreamerConfig(AppConfig):
    name = "django_streamer"
    verbose_name = "Streaming"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from . import checks, metrics
        from .extensions import extensions
        from .slots import release_leftovers

        request_finished.connect(release_leftovers, dispatch_uid="django_streamer.slots")
        checks.register()
        # The metrics registry is one extension like any other (extensions.py).
        extensions.add_stream_recorder(metrics.stream_recorder)
        if not any(isinstance(r, metrics.PoolRecorder) for r in extensions.limiter_recorders):
            extensions.add_limiter_recorder(metrics.PoolRecorder())
        metrics.register_with_prometheus()
