#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what the
# tests need (redis-server, nginx, Chromium from Debian; the package and its
# test extras into .venv), then runs ruff, mypy --strict, the docs build and pytest.
# Extra arguments go to pytest, e.g.  bash tests/run.sh -k browser
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "Installing ${need[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[tests,gevent,redis,docs]'

.venv/bin/ruff check flask_evstream tests example_app bench
.venv/bin/mypy
.venv/bin/sphinx-build -q -E -W -b dirhtml docs "$(mktemp -d)"
exec .venv/bin/python -m pytest "$@"
