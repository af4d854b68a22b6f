from __future__ import annotations

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("export.csv", views.export_csv, name="export_csv"),
    path("download/", views.download, name="download"),
    path("ticker/", views.ticker, name="ticker"),
    path("admin/", admin.site.urls),
]
