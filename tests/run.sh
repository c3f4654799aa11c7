#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what the
# tests need (redis-server, valkey-server, nginx, Chromium, node from Debian; the package and its
# test extras into .venv), then runs ruff, mypy --strict, the docs build, the
# docs' doctests and pytest.
# Extra arguments go to pytest, e.g.  bash tests/run.sh -k browser
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v caddy >/dev/null || need+=(caddy)
[ -x /usr/sbin/apache2 ] || need+=(apache2)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "Installing ${need[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Valkey 8 (Redis 7.2's fork; Debian 12's Redis is 7.0): in Debian 12 it
# comes from bookworm-backports, whose packages are taken only when asked for.
if ! command -v valkey-server >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: missing valkey-server; run as root or install it" >&2
    exit 1
  fi
  echo "Installing valkey-server ..."
  release=()
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: bookworm-backports" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      >/etc/apt/sources.list.d/bookworm-backports.sources
    release=(-t bookworm-backports)
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${release[@]}" valkey-server >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[tests,gevent,redis,docs]'

.venv/bin/ruff check flask_evstream tests example_app bench docs
.venv/bin/ruff format --check flask_evstream tests example_app bench docs
.venv/bin/mypy
.venv/bin/sphinx-build -q -E -W -b dirhtml docs "$(mktemp -d)"
# The >>> examples of the docs (events, ids, config) run.
.venv/bin/sphinx-build -q -E -W -b doctest docs "$(mktemp -d)"
# What the htmx recipe loads from a CDN, for its browser test (pinned in package.json).
[ -d docs/examples/node_modules ] || npm ci --prefix docs/examples --no-audit --no-fund --silent
.venv/bin/python -m pytest "$@"

# With no arguments, also the oldest and newest supported Python and Flask
# (pyenv's interpreters, which this kind of machine has), in-process tests.
[ $# -eq 0 ] || exit 0
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for combo in "3.9|flask>=2.3,<2.4|werkzeug>=2.3,<2.4" "3.13|flask>=3.1|werkzeug>=3.1"; do
  IFS='|' read -r version flask werkzeug <<<"$combo"
  python=$(ls -d "$pyenv_root"/versions/"$version".*/bin/python 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$python" ]; then
    echo "tests/run.sh: Python $version not found under $pyenv_root/versions" >&2
    exit 1
  fi
  venv=.venv-py$version
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$flask" "$werkzeug" -e '.[tests]'
  echo "== Python $version, Flask $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("flask"))')"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not server" tests/test_decorator.py tests/test_channels.py tests/test_event.py tests/test_event_parsers.py
done
