"""gunicorn config for every gunicorn server of the bench (bare, plain
Flask and flask-evstream alike): once the app is loaded, collect and
:func:`gc.freeze` what the worker holds, as ``flask_evstream.gunicorn_conf``
does by default (``EVSTREAM_GC_FREEZE``). Every row runs with it, so the
comparison stays the same server for all; ``bench/run.py --no-gc-freeze``
leaves it out."""

from __future__ import annotations

import gc
import typing as t


def post_worker_init(worker: t.Any) -> None:
    gc.collect()
    gc.freeze()


def worker_exit(server: t.Any, worker: t.Any) -> None:
    gc.unfreeze()  # a clean interpreter exit, as flask_evstream.gunicorn_conf
