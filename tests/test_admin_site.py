"""The dashboard on custom admin sites, and a permission hook that fails.

This module is its own URLconf (``ROOT_URLCONF="tests.test_admin_site"``): a
custom site given the dashboard with the mixin, one with ``register()``, and
the default site.
"""

from __future__ import annotations

import logging

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import path

from django_streamer.admin import DashboardSiteMixin, register


class MixinSite(DashboardSiteMixin, admin.AdminSite):
    pass


mixin_site = MixinSite(name="mixin_admin")
registered_site = admin.AdminSite(name="registered_admin")
register(registered_site)
register(registered_site)  # twice is harmless
plain_site = admin.AdminSite(name="plain_admin")

urlpatterns = [
    path("mixin/", mixin_site.urls),
    path("registered/", registered_site.urls),
    path("plain/", plain_site.urls),
    path("admin/", admin.site.urls),
]


def raise_boom(request: object) -> bool:
    raise RuntimeError("boom in the hook")


@pytest.fixture
def staff(tmp_path, settings) -> Client:
    settings.STREAMER_METRICS_DIR = str(tmp_path / "metrics")
    settings.ROOT_URLCONF = "tests.test_admin_site"
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("prefix", ["mixin", "registered", "admin"])
def test_each_site_serves_the_dashboard_its_json_and_an_index_entry(staff, prefix):
    page = staff.get(f"/{prefix}/streaming/")
    assert page.status_code == 200
    assert f'data-url="/{prefix}/streaming/data.json"'.encode() in page.content
    assert staff.get(f"/{prefix}/streaming/data.json").status_code == 200
    assert f'href="/{prefix}/streaming/"'.encode() in staff.get(f"/{prefix}/").content


@pytest.mark.django_db
def test_a_site_not_given_the_dashboard_has_none(staff):
    assert staff.get("/plain/streaming/").status_code == 404
    assert b"/streaming/" not in staff.get("/plain/").content


@pytest.mark.django_db
def test_a_raising_permission_hook_costs_only_the_dashboard(staff, caplog):
    caplog.set_level(logging.ERROR, logger="django_streamer")
    with override_settings(STREAMER_DASHBOARD_PERMISSION="tests.test_admin_site.raise_boom"):
        index = staff.get("/admin/")
        assert index.status_code == 200  # every other admin page still works
        assert b"/admin/streaming/" not in index.content
        assert staff.get("/admin/password_change/").status_code == 200
        assert staff.get("/admin/streaming/").status_code == 403
        assert staff.get("/admin/streaming/data.json").status_code == 403
    logged = [r for r in caplog.records if "STREAMER_DASHBOARD_PERMISSION" in r.getMessage()]
    assert logged and "boom in the hook" in (logged[0].exc_text or str(logged[0].exc_info))


def test_no_private_attribute_is_set_on_a_site():
    assert not [n for n in vars(registered_site) if n.startswith("_django_streamer")]
