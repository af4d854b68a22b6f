from django.http import HttpRequest, HttpResponse

from .urls import urlpatterns  # noqa: F401


def handler500(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"handler500 ran", status=500)
