"""gunicorn configuration for serving event streams with gevent workers.

Use it as it is::

    gunicorn -c python:flask_evstream.gunicorn_conf yourapp:app

or import it from your own config file and change what you need::

    from flask_evstream.gunicorn_conf import *  # noqa: F403
    bind = "0.0.0.0:9000"

Environment variables (read when gunicorn starts):

``EVSTREAM_BIND``
    Address(es) to listen on, comma separated. Default ``0.0.0.0:$PORT`` when
    ``PORT`` is set, else ``127.0.0.1:8000``.
``EVSTREAM_WORKERS``
    Worker processes. Default ``WEB_CONCURRENCY``, else the number of CPUs.
``EVSTREAM_CONNECTIONS``
    Simultaneous connections (open streams) per worker. Default 10000.
``EVSTREAM_GRACEFUL_TIMEOUT``
    Seconds a worker may take to exit after SIGTERM. Default 10. Open
    streams are ended as soon as the worker stops, so workers exit well
    within it.
``EVSTREAM_GC_FREEZE``
    ``1`` (default) or ``0``. Each worker moves the objects it holds once the
    app is loaded (modules, the app, its extensions) out of the garbage
    collector's reach (:func:`gc.freeze`), so a full collection, which
    stops every stream of the worker while it runs, scans only what came
    after: the connections. Measured with 1,000 subscribers on one worker,
    a full collection took 27 ms with the memory broker and 49 ms with
    Redis, and it landed in a broadcast; about half of what it scanned was
    the loaded code.
``PROMETHEUS_MULTIPROC_DIR``
    For apps with ``EVSTREAM_METRICS = True`` and more than one worker:
    the directory of prometheus_client's multiprocess mode, where each
    worker writes its metrics (see :doc:`/metrics`). The master creates it
    if needed and empties it at start (its ``*.db`` files, from an earlier
    run: stale gauges of dead workers and counters of another run), and
    removes the live gauges of each worker that exits
    (:func:`prometheus_client.multiprocess.mark_process_dead`).

Check a config with ``gunicorn --check-config -c python:flask_evstream.gunicorn_conf app:app``:
gunicorn ignores names it does not know.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import sys
import time
import typing as t


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _bool_env(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw not in ("0", "1"):
        raise ValueError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _default_bind() -> str:
    port = os.environ.get("PORT")
    return f"0.0.0.0:{port}" if port else "127.0.0.1:8000"


# Where to listen.
bind = [b.strip() for b in os.environ.get("EVSTREAM_BIND", _default_bind()).split(",") if b.strip()]
# Worker processes; each holds many streams, so about one per core.
workers = _int_env("EVSTREAM_WORKERS", _int_env("WEB_CONCURRENCY", os.cpu_count() or 1))
# gevent: one greenlet per connection, so one worker holds thousands of streams.
worker_class = "gevent"
# Simultaneous connections per worker.
worker_connections = _int_env("EVSTREAM_CONNECTIONS", 10000)
# Seconds without a worker heartbeat before the master restarts it. The
# gevent worker beats from its own loop, so long streams never trip it.
timeout = 30
# Seconds a worker has to finish after SIGTERM before it is killed.
graceful_timeout = _int_env("EVSTREAM_GRACEFUL_TIMEOUT", 10)
# Keep-alive between requests on one connection (not within a stream).
keepalive = 5
# gunicorn's access log line (when --access-logfile is given) with the path
# instead of the request line: no query string, where EventSource clients
# carry tokens (EventSource cannot send headers).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'
# Trust X-Forwarded-* from local proxies only (gunicorn's default).
forwarded_allow_ips = "127.0.0.1,::1"
# gunicorn 25+ opens a control socket at one fixed path shared by every
# gunicorn of the user; off, so that several servers on one host do not
# take it from each other (gunicorn before 25 ignores the name).
control_socket_disable = True

#: Freeze the objects loaded at worker start (see ``EVSTREAM_GC_FREEZE``).
GC_FREEZE = _bool_env("EVSTREAM_GC_FREEZE", True)


def on_starting(server: t.Any) -> None:
    """Raise the open-file limit so each worker can hold its connections."""
    connections = int(server.cfg.worker_connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        server.log.info("Raised the open-file limit from %s to %s", soft, want)
    if want < connections:
        server.log.warning("Open-file limit %s is below worker_connections %s", want, connections)
    _empty_metrics_dir(server)


#: The files prometheus_client's multiprocess mode writes: ``<type>_<pid>.db``.
_METRICS_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_\d+\.db")


def _empty_metrics_dir(server: t.Any) -> None:
    """Create ``PROMETHEUS_MULTIPROC_DIR`` if it is set, and remove the files
    an earlier run left there (prometheus_client would add them in)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    stale = [name for name in os.listdir(path) if _METRICS_FILE.fullmatch(name)]
    for name in stale:
        os.remove(os.path.join(path, name))
    if stale:
        server.log.info(
            "flask-evstream: removed %d metrics file(s) of an earlier run from"
            " PROMETHEUS_MULTIPROC_DIR %s",
            len(stale),
            path,
        )


def child_exit(server: t.Any, worker: t.Any) -> None:
    """In prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``
    set), remove the live gauges of a worker that exited, however it ended
    (:func:`prometheus_client.multiprocess.mark_process_dead`): its open
    streams are no longer counted. Its counters stay, so totals never go
    back. Runs in the master; imports nothing otherwise."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]


#: The live gauges' files of prometheus_client's multiprocess mode.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def on_exit(server: t.Any) -> None:
    """At the master's exit no worker is left: remove the live gauges of
    all of them, in case ``child_exit`` missed one (a worker killed at the
    end of ``graceful_timeout`` may not be reaped before the master exits)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or not os.path.isdir(path):
        return
    pids = {m.group(1) for m in map(_LIVE_GAUGE_FILE.fullmatch, os.listdir(path)) if m}
    if not pids:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    for pid in pids:
        multiprocess.mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


#: Seconds between the shutdown watcher's looks at the worker.
SHUTDOWN_POLL = 0.2


# When the shutdown watcher saw the worker stop (monotonic), if it did.
_stopping_since: float | None = None


def post_worker_init(worker: t.Any) -> None:
    """Warn about a setup that loses events, and end open streams once the
    worker is stopping.

    Warnings (in gunicorn's error log, once per worker): the ``sync`` worker
    (one open stream takes the whole worker), and an app whose broker is
    ``memory://`` served by more than one worker (a publish reaches the
    subscribers of its own worker only: set ``EVSTREAM_BROKER_URL`` to a
    Redis URL, or ``EVSTREAM_WORKERS=1``).

    gunicorn's worker stops accepting and waits for open requests, and an
    event stream never finishes by itself, so without this every stop waits
    for ``graceful_timeout``. A watcher (a greenlet, or a thread under
    ``gthread``) sees the worker stop, whatever the cause (SIGTERM, SIGINT,
    SIGQUIT, ``max_requests``, a reload), and ends the streams; it keeps
    ending the ones still opened until the process exits. Clients reconnect
    (to another worker) and resume with ``Last-Event-ID``. Watching rather
    than wrapping the signal handlers leaves gunicorn's own handlers alone.

    Last, unless ``EVSTREAM_GC_FREEZE=0``, it collects and then freezes
    every object alive (:func:`gc.freeze`): the modules and the app, loaded
    by then, are left out of every later collection.
    """
    from .concurrency import spawn
    from .response import end_streams

    _warn_about_setup(worker)

    def watch() -> None:
        while worker.alive:
            time.sleep(SHUTDOWN_POLL)
        global _stopping_since
        _stopping_since = time.monotonic()
        while True:
            end_streams()
            time.sleep(SHUTDOWN_POLL)

    spawn(watch, name="evstream-shutdown")
    if GC_FREEZE:
        # After the app is loaded (gunicorn calls this hook after
        # load_wsgi): collect what loading left, then freeze the rest.
        gc.collect()
        gc.freeze()


def _warn_about_setup(worker: t.Any) -> None:
    from .brokers.base import all_brokers
    from .brokers.memory import MemoryBroker

    if type(worker).__name__ == "SyncWorker":
        worker.log.warning(
            "flask-evstream: the sync worker serves one request at a time, so one"
            " open event stream blocks the whole worker. Use the gevent worker"
            " (flask_evstream.gunicorn_conf's default) or gthread."
        )
    workers = int(worker.cfg.workers)
    metrics = sys.modules.get("flask_evstream.metrics")
    if (
        workers > 1
        and metrics is not None
        and metrics.counting()
        and not metrics.multiprocess_dir()
    ):
        worker.log.warning(
            "flask-evstream: EVSTREAM_METRICS is on and gunicorn runs %d workers"
            " without PROMETHEUS_MULTIPROC_DIR: each worker counts for itself and a"
            " scrape shows the numbers of the worker that answers it. Set"
            " PROMETHEUS_MULTIPROC_DIR to a directory for the server's metrics.",
            workers,
        )
    if workers > 1 and any(isinstance(b, MemoryBroker) for b in all_brokers()):
        worker.log.warning(
            "flask-evstream: the broker is memory:// and gunicorn runs %d workers:"
            " a publish reaches only the subscribers of the worker that published it."
            " Set the app's EVSTREAM_BROKER_URL config key to redis://host:6379/0"
            " (FLASK_EVSTREAM_BROKER_URL with app.config.from_prefixed_env()) to broadcast across"
            " workers, or run one worker (EVSTREAM_WORKERS=1).",
            workers,
        )


def worker_exit(server: t.Any, worker: t.Any) -> None:
    """Let the worker's resumable streams' producers run to their end
    within ``graceful_timeout`` (their readers reconnected elsewhere and
    read the same log), close those still running (their streams end
    ``lost``), then close the brokers (Redis connections and readers), and
    give the objects frozen at start back to the garbage collector: the
    interpreter's exit then tears them down in its usual order (frozen, a
    logging handler outlived the threading module under gevent and its
    clean-up printed a traceback)."""
    from .brokers.base import all_brokers
    from .resumable import close_producers, producers

    if producers():
        since = _stopping_since if _stopping_since is not None else time.monotonic()
        left = max(0.0, graceful_timeout - 1.0 - (time.monotonic() - since))
        closed = close_producers(left)
        if closed:
            worker.log.warning(
                "flask-evstream: %d resumable stream(s) still running at the end of"
                " graceful_timeout were closed; they end lost",
                closed,
            )

    for broker in all_brokers():
        try:
            broker.close()
        except Exception:
            worker.log.exception("flask-evstream: closing broker %r failed", broker)
    if GC_FREEZE:
        gc.unfreeze()
