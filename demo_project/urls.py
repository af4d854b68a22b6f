from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from . import views, writer_views

urlpatterns = [
    path("", views.index, name="index"),
    path("export.csv", views.export_csv, name="export_csv"),
    path("download/", views.download, name="download"),
    path("ticker/", views.ticker, name="ticker"),
    path("files.zip", writer_views.files_zip, name="files_zip"),
    path("feed.ndjson", writer_views.feed, name="feed"),
    path("live/", views.live, name="live"),
    path("clock/", views.clock, name="clock"),
    path("admin/", admin.site.urls),
    path("streaming/", include("django_streamer.urls")),
]

# gunicorn serves no static files; the demo runs with DEBUG on, so Django does.
urlpatterns += staticfiles_urlpatterns()
