from django.urls import path

from . import views

urlpatterns = [path("<str:scenario>/<str:impl>", views.dispatch)]
