from __future__ import annotations

from django.urls import path

from tests import writer_views as v

urlpatterns = [
    path(name, getattr(v, name.replace("-", "_")))
    for name in [
        "fast",
        "endless",
        "fail",
        "text-csv",
        "async-fast",
        "async-fail",
        "db",
        "state",
        "rows-csv",
        "jsonl",
        "json-array",
        "slow-rows",
        "zip-files",
        "bad-zip",
    ]
]
