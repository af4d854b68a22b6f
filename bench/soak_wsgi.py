"""The soak site's WSGI module, shaped as ``startproject`` makes it."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.soak_settings")
application = get_wsgi_application()
