#!/usr/bin/env bash
# Run every test on a fresh machine: bash tests/run.sh
# Installs what the suite needs (Debian packages for the browser, load and
# Redis tests; a .venv with the package and its dev extras at the exact
# versions of tests/constraints.txt), then runs the linters, the type checker
# and pytest. Extra arguments go to pytest. The newest versions, unpinned and
# not blocking: bash tests/latest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v jq >/dev/null || missing+=(jq)
command -v unzip >/dev/null || missing+=(unzip)
command -v 7z >/dev/null || missing+=(p7zip-full)  # Debian's p7zip-full gives 7z
command -v curl >/dev/null || missing+=(curl)  # built with brotli and zstd on Debian 12+
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

quiet() {  # run a noisy install step; show its output only if it fails
  "$@" >.install.log 2>&1 || { cat .install.log; return 1; }
}
# Every leg installs the same pinned set (tests/constraints.txt): an upstream
# release cannot turn this script red. Django is pinned per leg.
PIP_VERSION=26.3
DJANGO_MAIN=5.2.20
pinned_install() {  # pinned_install VENV DJANGO_VERSION EXTRAS
  quiet "$1/bin/python" -m pip install "pip==$PIP_VERSION"
  # The variable, not -c, so that the isolated build of the package is pinned too.
  PIP_CONSTRAINT="$PWD/tests/constraints.txt" \
    quiet "$1/bin/python" -m pip install -e ".[$3]" "Django==$2"
}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pinned_install .venv "$DJANGO_MAIN" dev,docs

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy django_streamer tests demo_project
echo "== pytest (Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'), Django $(.venv/bin/python -c 'import django; print(django.get_version())'))"
.venv/bin/python -m pytest "$@"

# The other supported ends of the matrix, where this machine has the Python:
# Django 4.2 on the oldest Python, Django 6.x on a Python that allows it.
find_python() {
  local candidate
  for candidate in "python$1" "$(pyenv root 2>/dev/null)/versions/$1".*/bin/python; do
    if "$candidate" -c 'pass' >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
}
compat() {  # compat PYTHON_VERSION DJANGO_VERSION VENV
  local python
  python=$(find_python "$1")
  if [ -z "$python" ]; then
    echo "== no Python $1 here: the $2 leg of the matrix is not run"
    return
  fi
  [ -x "$3/bin/python" ] || "$python" -m venv "$3"
  pinned_install "$3" "$2" dev
  echo "== pytest (Python $1, $("$3/bin/python" -c 'import django; print("Django", django.get_version())'))"
  "$3/bin/python" -m pytest -p no:randomly -q -m "not server and not browser and not docs"
}
if [ "${STREAMER_MATRIX:-1}" = 1 ]; then
  compat 3.10 4.2.30 .venv-django42
  compat 3.12 6.1.3 .venv-django6
fi
