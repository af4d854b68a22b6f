"""The soak and fault run (bench/soak.py), one minute of it, on every CI run.

It starts its own redis-server and gunicorn, drives mixed traffic while it
kills workers, reloads, drains, stops and pauses Redis and fills the metrics
tmpfs, then checks its invariants: this test fails when any of them fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
@pytest.mark.timeout(420)
def test_one_minute_of_soak_keeps_every_invariant() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # Every fault must run: mounting the metrics tmpfs needs root, which CI has.
    args = ["--seconds", "60"]
    if os.geteuid() == 0:
        args.append("--require-all-faults")
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "| failed sources never end cleanly |" in run.stdout
    assert "FAILED" not in run.stdout
