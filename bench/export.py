"""Exports at the database's speed (issue 25): CSV of a PostgreSQL table, five ways.

    .venv/bin/python -m bench.export                  # 300,000 rows, 3 rounds
    .venv/bin/python -m bench.export --rows 20000 --rounds 1   # a quick check

Fills a database of its own (dropped at the end) with orders of seven column types
(bigint, text, numeric, timestamptz, date, uuid, boolean), starts gunicorn gthread
(one worker) on it, and downloads the whole CSV with each view of bench/export_views.py,
interleaved, reading the raw socket: the Django docs' Echo recipe, django-queryset-csv
(the ``bench`` extra; skipped without it), ``stream_csv`` on the ORM path
(``copy=False``), ``stream_csv`` through COPY, and raw COPY passed through
``stream_response``. Prints medians and the worker's peak RSS growth per way.
Targets: COPY at least 0.8x raw COPY and 5x the Echo recipe.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Gunicorn  # noqa: E402
from django_streamer.testing import fetch  # noqa: E402

ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"
WAYS = ["echo", "djqscsv", "orm", "copy", "raw"]


def make_database(name: str, rows: int) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PG_NAME": name}
    env["DJANGO_SETTINGS_MODULE"] = "bench.export_settings"
    code = "import django; django.setup(); from django.core.management import call_command;"
    code += "call_command('migrate', verbosity=0)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={name}") as conn:
        conn.execute(
            "INSERT INTO exportapp_order (customer, total, placed, day, ref, paid) "
            "SELECT 'customer ' || i || CASE WHEN i %% 10 = 0 THEN ', \"quoted\"' ELSE '' END, "
            "(i %% 100000) / 100.0, timestamptz '2026-01-01' + i * interval '1.5 second', "
            "date '2026-01-01' + i %% 365, md5(i::text)::uuid, i %% 2 = 0 "
            "FROM generate_series(1, %s) AS i",
            [rows],
        )


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def has_djqscsv() -> bool:
    try:
        import djqscsv  # noqa: F401
    except ImportError:
        return False
    return True


def peak_rss_kib(server: Gunicorn) -> int:
    return int(fetch("127.0.0.1", server.port, "/rss").body)


def run(rows: int, rounds: int) -> None:
    name = f"streamer_bench_export_{os.getpid()}"
    ways = [w for w in WAYS if w != "djqscsv" or has_djqscsv()]
    make_database(name, rows)
    server = Gunicorn("gthread", env={"DJANGO_SETTINGS_MODULE": "bench.export_settings",
                                      "BENCH_PG_NAME": name})  # fmt: skip
    times: dict[str, list[float]] = {way: [] for way in ways}
    sizes: dict[str, int] = {}
    growth: dict[str, int] = {}
    try:
        for _ in range(rounds):
            for way in ways:
                before = peak_rss_kib(server)
                start = time.perf_counter()
                wire = fetch("127.0.0.1", server.port, f"/{way}", timeout=600)
                times[way].append(time.perf_counter() - start)
                if (wire.status, wire.complete) != (200, True):
                    raise RuntimeError(f"{way}: {wire.status} {wire.error}")
                sizes[way] = len(wire.body)
                growth[way] = max(growth.get(way, 0), peak_rss_kib(server) - before)
    finally:
        server.stop()
        drop_database(name)
    print(f"{rows:,} orders, gunicorn gthread, medians of {rounds}")
    print(f"{'way':<10}{'s':>8}{'MB/s':>8}{'MB':>8}{'RSS +MiB':>10}")
    median = {way: statistics.median(times[way]) for way in ways}
    for way in ways:
        mb = sizes[way] / 1e6
        print(f"{way:<10}{median[way]:8.2f}{mb / median[way]:8.1f}{mb:8.1f}"
              f"{growth[way] / 1024:10.1f}")  # fmt: skip
    rate = {way: sizes[way] / median[way] for way in ways}
    print(f"COPY vs raw COPY: {rate['copy'] / rate['raw']:.2f}x (target 0.8x)")
    print(f"COPY vs the Echo recipe: {rate['copy'] / rate['echo']:.1f}x (target 5x)")
    print(f"ORM path vs the Echo recipe: {rate['orm'] / rate['echo']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run(args.rows, args.rounds)


if __name__ == "__main__":
    main()
