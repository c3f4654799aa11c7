#!/usr/bin/env bash
# The demo: installs flask-evstream with gevent into .venv and serves the
# example app under gunicorn's gevent worker on http://127.0.0.1:8000
# (EVSTREAM_BIND=0.0.0.0:8000 to listen on all interfaces).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[gevent,fast]'
# One worker: the demo's broker is memory://, which lives in one process. For
# more workers, name Redis too, e.g.
#   FLASK_EVSTREAM_BROKER_URL=redis://localhost:6379/0 EVSTREAM_WORKERS=4 bash example_app/run.sh
export EVSTREAM_BIND=${EVSTREAM_BIND:-127.0.0.1:8000} EVSTREAM_WORKERS=${EVSTREAM_WORKERS:-1}
echo "Open http://${EVSTREAM_BIND}/"
exec .venv/bin/gunicorn -c python:flask_evstream.gunicorn_conf 'example_app:create_app()'
