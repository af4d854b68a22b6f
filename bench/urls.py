from django.urls import path

from . import views

urlpatterns = [
    path("limited/<str:impl>", views.limited),
    path("<str:scenario>/<str:impl>", views.dispatch),
]
