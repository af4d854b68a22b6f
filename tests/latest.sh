#!/usr/bin/env bash
# Try the newest releases of everything the suite installs, unpinned, in
# .venv-latest: bash tests/latest.sh [pytest args]
# Not part of CI, and never blocking: it shows drift in redis-py, asgiref,
# gunicorn, zipstream-ng, mypy or ruff before it reaches tests/constraints.txt.
# When it is green, refresh the pins with the freeze it prints at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
rm -rf .venv-latest
"$PYTHON" -m venv .venv-latest
.venv-latest/bin/python -m pip install -q --upgrade pip
.venv-latest/bin/python -m pip install -q --upgrade -e ".[dev]"
status=0
.venv-latest/bin/ruff check . || status=1
.venv-latest/bin/mypy django_streamer tests demo_project || status=1
.venv-latest/bin/python -m pytest -q "$@" || status=1
echo "== the newest versions (for tests/constraints.txt, Django pinned in tests/run.sh):"
.venv-latest/bin/python -m pip freeze --exclude-editable | grep -v -i '^django=='
exit $status
