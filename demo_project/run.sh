#!/usr/bin/env bash
# Start the django-streamer demo on a fresh machine: bash demo_project/run.sh
# Creates .venv, installs the package, migrates SQLite, creates an admin login,
# prints it, and serves on http://127.0.0.1:8000 under gunicorn (gthread).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[gunicorn,prometheus,zip]"
export DJANGO_SETTINGS_MODULE=demo_project.settings
.venv/bin/python manage.py migrate --noinput -v 0
password=$(.venv/bin/python manage.py demo_admin)
port=${PORT:-8000}
echo
echo "  django-streamer demo: http://127.0.0.1:${port}/"
echo "  admin login:          http://127.0.0.1:${port}/admin/  user 'admin', password '${password}'"
echo
exec .venv/bin/gunicorn -c python:django_streamer.gunicorn_config \
  --bind "127.0.0.1:${port}" demo_project.wsgi
