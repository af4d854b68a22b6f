"""Bench settings for the writer and format rows (bench/writer.py)."""

from bench.settings import *  # noqa: F403

ROOT_URLCONF = "bench.writer_urls"
