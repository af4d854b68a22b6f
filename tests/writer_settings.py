"""The test settings with the writer views' URLconf (and PostgreSQL when asked)."""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

ROOT_URLCONF = "tests.writer_urls"
STREAMER_WRITER_BUFFER = int(os.environ.get("STREAMER_TEST_WRITER_BUFFER", 256 * 1024))
if os.environ.get("STREAMER_TEST_PG"):
    DATABASES = {
        **DATABASES,
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        },
    }
