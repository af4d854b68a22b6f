"""Bench settings for bench/export.py: PostgreSQL (BENCH_PG_NAME) and the orders table."""

import os

from bench.settings import *  # noqa: F403

INSTALLED_APPS = ["django_streamer", "tests.exportapp"]
ROOT_URLCONF = "bench.export_views"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_PG_NAME", "streamer_bench_export"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}
