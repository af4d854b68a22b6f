"""Views for the stream_zip server tests (tests/test_zip_server.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.http import HttpResponse
from django.urls import path

from django_streamer import stream_zip

# Two requests meet here, each from its member's thread-sensitive call: they
# can only meet if those calls do not queue for one thread.
_meeting = threading.Barrier(2, timeout=20)
# The database connections the members' ORM calls used (per process).
used: list[Any] = []


def _note_connection():
    used.append(connections["default"])


def orm(request):
    meet = request.GET.get("meet") == "1"

    async def produce(out):
        if meet:
            await sync_to_async(_meeting.wait)()
        await sync_to_async(_note_connection)()
        users = await User.objects.acount()
        await out.write(f"users {users}\n")  # str: a member takes text too

    try:
        return stream_zip([("count.txt", produce)], filename="count.zip")
    except RuntimeError as exc:  # refused in the view (asgiref < 3.13 under ASGI)
        return HttpResponse(str(exc), status=409)


def changed(request):
    """A sized archive whose file member grows or shrinks after stream_zip() counted it."""
    file = Path(request.GET["path"])
    members = [
        ("first.bin", os.urandom(1 << 20), {"compress": False}),
        ("changed.bin", file, {"compress": False}),
    ]
    response = stream_zip(members, filename="changed.zip")
    if request.GET["how"] == "grow":
        with open(file, "ab") as grown:
            grown.write(b"more")
    else:
        os.truncate(file, file.stat().st_size - 4)
    return response


def closed(request):
    """How many of the connections the members used are closed (of how many)."""
    shut = sum(connection.connection is None for connection in used)
    return HttpResponse(f"{shut} of {len(used)}")


urlpatterns = [path("orm", orm), path("changed", changed), path("closed", closed)]
