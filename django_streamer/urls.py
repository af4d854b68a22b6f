"""``path("streaming/", include("django_streamer.urls"))`` gives ``streaming/metrics/``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "django_streamer"
urlpatterns = [path("metrics/", views.metrics, name="metrics")]
