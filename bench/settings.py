"""Bench settings: only StreamerMiddleware (streams see their request, as in a project),
so the figures are about the response."""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django_streamer"]
MIDDLEWARE = ["django_streamer.middleware.StreamerMiddleware"]
ROOT_URLCONF = "bench.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
# bench/run.py starts a twin server with metrics off to measure their cost.
STREAMER_METRICS = os.environ.get("BENCH_METRICS", "1") == "1"
# The cluster-scope row: bench/run.py starts its own redis-server.
STREAMER_REDIS_URL = os.environ.get("BENCH_REDIS_URL") or None
