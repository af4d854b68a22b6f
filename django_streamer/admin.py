"""The live dashboard inside Django's admin: no model, no migration.

Admin autodiscovery imports this module; it adds two URLs to the default admin
site (the page and its JSON) and an entry to its app list, which the index
page and the nav sidebar both show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache

from .conf import conf


def may_view(request: HttpRequest) -> bool:
    """Active staff, then STREAMER_DASHBOARD_PERMISSION if set."""
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return False
    hook = conf.STREAMER_DASHBOARD_PERMISSION
    if hook:
        check: Callable[[HttpRequest], bool] = import_string(hook)
        return bool(check(request))
    return True


def dashboard(request: HttpRequest, site: AdminSite) -> HttpResponse:
    if not may_view(request):
        raise PermissionDenied
    context = {
        **site.each_context(request),
        "title": "Streaming",
        "data_url": reverse(f"{site.name}:django_streamer_dashboard_data"),
    }
    return TemplateResponse(request, "django_streamer/dashboard.html", context)


def dashboard_data(request: HttpRequest) -> JsonResponse:
    """The dashboard's JSON API; staff only (403 otherwise, never a redirect)."""
    if not may_view(request):
        return JsonResponse({"error": "staff only"}, status=403)
    from .metrics import snapshot_json

    response = JsonResponse(snapshot_json())
    response["Cache-Control"] = "no-store"
    return response


def install(site: AdminSite) -> None:
    if getattr(site, "_django_streamer", False):
        return
    site._django_streamer = True  # type: ignore[attr-defined]
    get_urls = site.get_urls
    get_app_list = site.get_app_list

    def urls() -> list[URLPattern | URLResolver]:
        ours: list[URLPattern | URLResolver] = [
            path(
                "streaming/",
                site.admin_view(lambda request: dashboard(request, site)),
                name="django_streamer_dashboard",
            ),
            # Not admin_view(): an API answers 403, it does not redirect to a login page.
            path(
                "streaming/data.json",
                never_cache(dashboard_data),
                name="django_streamer_dashboard_data",
            ),
        ]
        return ours + get_urls()

    def app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps: list[dict[str, Any]] = list(get_app_list(request, app_label))
        if app_label not in (None, "django_streamer") or not may_view(request):
            return apps
        url = reverse(f"{site.name}:django_streamer_dashboard")
        apps.append(
            {
                "name": "Streaming",
                "app_label": "django_streamer",
                "app_url": url,
                "has_module_perms": True,
                "models": [
                    {
                        "name": "Dashboard",
                        "object_name": "Dashboard",
                        "admin_url": url,
                        "add_url": None,
                        "view_only": True,
                        "perms": {"view": True},
                    }
                ],
            }
        )
        return apps

    site.get_urls = urls  # type: ignore[method-assign]
    site.get_app_list = app_list  # type: ignore[method-assign]


install(admin.site)
