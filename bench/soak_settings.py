"""Settings of the soak site (bench/soak.py): a startproject-shaped project.

``soak_wsgi.py`` sets DJANGO_SETTINGS_MODULE, as ``startproject`` does; the
soak driver passes only its directories and Redis through the environment.
"""

import os

SECRET_KEY = "soak-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_streamer",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "bench.soak_views.worker_pid",
    "django_streamer.middleware.StreamerMiddleware",
]
ROOT_URLCONF = "bench.soak_views"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.environ.get("SOAK_DIR", "/tmp"), "soak.sqlite3"),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STREAMER_METRICS_DIR = os.environ.get("SOAK_METRICS_DIR")
STREAMER_LIMITER_DIR = os.environ.get("SOAK_LIMITER_DIR")
STREAMER_REDIS_URL = os.environ.get("SOAK_REDIS_URL")
STREAMER_METRICS_ALLOW = ["127.0.0.1"]
STREAMER_SEND_TIMEOUT = 5
STREAMER_CLUSTER_LEASE = 3
# While Redis is away a cluster pool refuses (429), so that its 429s are explained.
STREAMER_CLUSTER_ON_ERROR = "closed"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
