from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path

from . import views

urlpatterns = [
    # The browser tests need the admin's CSS; nothing else serves it here.
    path("static/<path:path>", serve, {"insecure": True}),
    path("admin/", admin.site.urls),
    path("streaming/", include("django_streamer.urls")),
    path("", include("django_prometheus.urls")),
    path("stream/", views.stream_view),
    path("plain/", views.plain_view),
    path("export/", views.export_view),
    path("export-cbv/", views.ExportView.as_view()),
    path("limited/reject/", views.limited_reject),
    path("limited/wait/", views.limited_wait),
    path("limited/abort/", views.limited_abort),
    path("limited/kill/", views.limited_kill),
    path("limited/ip/", views.limited_ip),
    path("sse/", include("tests.sse_views")),
    path("z/", include("tests.compression_views")),
    path("r/", include("tests.range_views")),
    path("cap/", include("tests.cap_views")),
]
