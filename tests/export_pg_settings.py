"""The test settings on PostgreSQL (as zip_pg_settings.py), persistent connections optional."""

from __future__ import annotations

import os
from typing import Any

from tests.settings import *  # noqa: F403

DATABASES: dict[str, dict[str, Any]] = {  # type: ignore[no-redef]
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["STREAMER_TEST_PG_NAME"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "CONN_MAX_AGE": int(os.environ.get("STREAMER_TEST_CONN_MAX_AGE", "0")),
    }
}
