"""The test project's ASGI application as uvicorn serves it: draining on its stop signals."""

import os

from django.core.asgi import get_asgi_application

from django_streamer.drain_hooks import DrainOnSignals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
application = DrainOnSignals(get_asgi_application())
