"""Minimal settings for the test suite."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_streamer",
    "tests.exportapp",  # a table of many column types for the export tests
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A server test adds a project's middleware here.
    *os.environ.get("STREAMER_TEST_MIDDLEWARE", "").split(),
    "django_streamer.middleware.StreamerMiddleware",
]
ROOT_URLCONF = os.environ.get("STREAMER_TEST_URLCONF", "tests.urls")
# A file when a gunicorn test needs one database for all its workers.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("STREAMER_TEST_DB", ":memory:"),
    }
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# The gunicorn fixture points every worker at the test's own directory.
# Else a fresh private one: a shared default under /dev/shm may have been left
# with another mode by older code, which check E004 rightly refuses.
STREAMER_LIMITER_DIR = os.environ.get("STREAMER_TEST_LIMITER_DIR") or tempfile.mkdtemp(
    prefix="streamer-pools-"
)
STREAMER_METRICS_DIR = os.environ.get("STREAMER_TEST_METRICS_DIR") or tempfile.mkdtemp(
    prefix="streamer-metrics-"
)
STREAMER_METRICS_ALLOW = ["127.0.0.1", "::1"]
STATIC_URL = "/static/"
STREAMER_DRAIN_SPREAD = float(os.environ.get("STREAMER_TEST_DRAIN_TIMEOUT", "5"))
STREAMER_SSE_MAX_THREADS = int(os.environ.get("STREAMER_TEST_SSE_MAX_THREADS", "1000"))
# The send-timeout tests use a short one.
STREAMER_SEND_TIMEOUT = float(os.environ.get("STREAMER_TEST_SEND_TIMEOUT", "60"))
# The cluster tests point gunicorn masters at their own redis-server.
STREAMER_REDIS_URL = os.environ.get("STREAMER_TEST_REDIS_URL") or None
STREAMER_CLUSTER_LEASE = float(os.environ.get("STREAMER_TEST_CLUSTER_LEASE", "10"))
STREAMER_CLUSTER_ON_ERROR = os.environ.get("STREAMER_TEST_CLUSTER_ON_ERROR", "local")
# Off unless a server test turns it on (compress=None then compresses).
STREAMER_COMPRESSION = os.environ.get("STREAMER_TEST_COMPRESSION") == "1"
STREAMER_FLEET = os.environ.get("STREAMER_TEST_FLEET") == "1"
STREAMER_IP_HEADER = os.environ.get("STREAMER_TEST_IP_HEADER") or None
if os.environ.get("STREAMER_TEST_TRUSTED_PROXIES"):
    STREAMER_TRUSTED_PROXIES = os.environ["STREAMER_TEST_TRUSTED_PROXIES"].split(",")
STREAMER_FLEET_HOST = os.environ.get("STREAMER_TEST_FLEET_HOST") or None
# The stream-cap server tests set the caps; else the library's defaults apply.
if os.environ.get("STREAMER_TEST_MAX_STREAMS"):
    STREAMER_MAX_STREAMS = int(os.environ["STREAMER_TEST_MAX_STREAMS"])
    STREAMER_MAX_STREAMS_SCOPE = os.environ.get("STREAMER_TEST_MAX_STREAMS_SCOPE", "host")
