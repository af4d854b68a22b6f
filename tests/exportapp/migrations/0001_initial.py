from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("customer", models.TextField()),
                ("total", models.DecimalField(decimal_places=2, max_digits=12, null=True)),
                ("placed", models.DateTimeField(null=True)),
                ("day", models.DateField(null=True)),
                ("ref", models.UUIDField(null=True)),
                ("data", models.JSONField(null=True)),
                ("paid", models.BooleanField(null=True)),
            ],
        ),
    ]
