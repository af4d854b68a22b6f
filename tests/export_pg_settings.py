"""The PostgreSQL test settings, with persistent connections when a test asks for them."""

from __future__ import annotations

import os

from tests.zip_pg_settings import *  # noqa: F403
from tests.zip_pg_settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("STREAMER_TEST_CONN_MAX_AGE", "0"))
