from django.urls import path

from . import writer_views

urlpatterns = [path("<str:scenario>/<str:impl>", writer_views.dispatch)]
