"""A table with the column types an export meets (tests/test_export*.py, bench/export.py)."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    customer = models.TextField()
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    placed = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    ref = models.UUIDField(null=True)
    data = models.JSONField(null=True)
    paid = models.BooleanField(null=True)

    class Meta:
        # JSONField's system check would otherwise ask the database whether it
        # supports JSON (Django 6.1 runs it for every run_checks()).
        required_db_features = ["supports_json_field"]
        app_label = "exportapp"

    def __str__(self) -> str:
        return f"order {self.pk}"
