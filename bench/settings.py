"""Bench settings: no middleware, so the figures are about the response."""

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django_streamer"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
