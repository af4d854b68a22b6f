from __future__ import annotations

from django.apps import AppConfig


class DjangoStreamerConfig(AppConfig):
    name = "django_streamer"
    verbose_name = "Streaming"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from . import checks, metrics
        from .response import recorder_factories
        from .slots import limiter_recorders, release_leftovers

        request_finished.connect(release_leftovers, dispatch_uid="django_streamer.slots")

        checks.register()
        if metrics.stream_recorder not in recorder_factories:
            recorder_factories.append(metrics.stream_recorder)
        if not any(isinstance(r, metrics.PoolRecorder) for r in limiter_recorders):
            limiter_recorders.append(metrics.PoolRecorder())
        metrics.register_with_prometheus()
