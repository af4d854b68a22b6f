from django.urls import path

from . import compress_views, sse_views, views

urlpatterns = [
    path("limited/<str:impl>", views.limited),
    path("sse/idle", sse_views.idle),
    path("sse/fanout", sse_views.fanout),
    path("sse/publish", sse_views.publish),
    path("z/<str:impl>", compress_views.dispatch),
    path("<str:scenario>/<str:impl>", views.dispatch),
]
