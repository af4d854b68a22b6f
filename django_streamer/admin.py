"""The live dashboard inside Django's admin: no model, no migration.

Admin autodiscovery imports this module, which registers the dashboard with the
default site (``admin.site``): two URLs (the page and its JSON) and an entry in
the app list, which the index page and the nav sidebar both show. A custom
``AdminSite`` gets the same with :class:`DashboardSiteMixin` in its bases, or by
calling :func:`register` on an instance.
"""

from __future__ import annotations

import logging
import weakref
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

__all__ = ["DashboardSiteMixin", "may_view", "register"]

logger = logging.getLogger("django_streamer")


def may_view(request: HttpRequest) -> bool:
    """Active staff, then STREAMER_DASHBOARD_PERMISSION if set.

    A hook that cannot be imported or raises refuses (and logs why): it must
    cost the dashboard only, never the admin pages that list it.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return False
    hook = conf.STREAMER_DASHBOARD_PERMISSION
    if not hook:
        return True
    try:
        check: Callable[[HttpRequest], bool] = import_string(hook)
        return bool(check(request))
    except Exception:
        logger.exception("STREAMER_DASHBOARD_PERMISSION %r failed; the dashboard is refused", hook)
        return False


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


def dashboard_urls(site: AdminSite) -> list[URLPattern | URLResolver]:
    """The page (behind ``admin_view``) and its JSON, named in the site's namespace."""
    return [
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


def with_dashboard_entry(
    site: AdminSite, request: HttpRequest, apps: list[dict[str, Any]], app_label: str | None
) -> list[dict[str, Any]]:
    """``apps`` plus a "Streaming" entry, for those who may view the dashboard."""
    if app_label not in (None, "django_streamer") or not may_view(request):
        return apps
    url = reverse(f"{site.name}:django_streamer_dashboard")
    entry: dict[str, Any] = {"name": "Dashboard", "object_name": "Dashboard", "admin_url": url}
    entry |= {"add_url": None, "view_only": True, "perms": {"view": True}}
    app: dict[str, Any] = {"name": "Streaming", "app_label": "django_streamer", "app_url": url}
    app |= {"has_module_perms": True, "models": [entry]}
    return [*apps, app]


class DashboardSiteMixin:
    """Put first in a custom ``AdminSite``'s bases to give it the dashboard::

    class MySite(DashboardSiteMixin, admin.AdminSite): ...
    """

    def get_urls(self) -> list[URLPattern | URLResolver]:
        site: AdminSite = self  # type: ignore[assignment]
        theirs: list[URLPattern | URLResolver] = super().get_urls()  # type: ignore[misc]
        return dashboard_urls(site) + theirs

    def get_app_list(
        self, request: HttpRequest, app_label: str | None = None
    ) -> list[dict[str, Any]]:
        apps = list(super().get_app_list(request, app_label))  # type: ignore[misc]
        return with_dashboard_entry(self, request, apps, app_label)  # type: ignore[arg-type]


_registered: weakref.WeakSet[AdminSite] = weakref.WeakSet()


def register(site: AdminSite) -> None:
    """Give an existing ``AdminSite`` instance the dashboard; once per site.

    Call it before the site's URLs are included (e.g. in ``urls.py``, above
    ``path("admin/", site.urls)``). The default site needs no call.
    """
    if isinstance(site, DashboardSiteMixin) or site in _registered:
        return
    _registered.add(site)
    get_urls = site.get_urls
    get_app_list = site.get_app_list

    def urls() -> list[URLPattern | URLResolver]:
        return dashboard_urls(site) + get_urls()

    def app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        apps = list(get_app_list(request, app_label))
        return with_dashboard_entry(site, request, apps, app_label)

    site.get_urls = urls  # type: ignore[method-assign]
    site.get_app_list = app_list  # type: ignore[method-assign]


register(admin.site)
