"""``manage.py streamer_reset_names``: forget every stream and pool name, host wide."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from django_streamer.metrics import get_store


class Command(BaseCommand):
    help = (
        "Reset the metrics names table (and with it every figure): names are "
        "assigned rows again, first come first served, up to STREAMER_METRICS_MAX_NAMES. "
        "Running workers start new files within a second."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        store = get_store()
        removed = store.reset()
        self.stdout.write(f"Reset {store.directory}: {removed} file(s) removed.")
