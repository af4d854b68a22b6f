from django.urls import path

from . import adaptive_views, compress_views, sse_views, views

urlpatterns = [
    path("limited/<str:impl>", views.limited),
    path("adaptive/<str:impl>", adaptive_views.dispatch),
    path("sse/idle", sse_views.idle),
    path("sse/fanout", sse_views.fanout),
    path("sse/publish", sse_views.publish),
    path("z/<str:impl>", compress_views.dispatch),
    path("<str:scenario>/<str:impl>", views.dispatch),
]
