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
    streams are ended at once on SIGTERM, so workers exit well within it.

Check a config with ``gunicorn --check-config -c python:flask_evstream.gunicorn_conf app:app``:
gunicorn ignores names it does not know.
"""

from __future__ import annotations

import os
import resource
import signal
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
# Trust X-Forwarded-* from local proxies only (gunicorn's default).
forwarded_allow_ips = "127.0.0.1,::1"


def on_starting(server: t.Any) -> None:
    """Raise the open-file limit so each worker can hold its connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = worker_connections + 256
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        server.log.info("Raised the open-file limit from %s to %s", soft, want)
    if want < worker_connections:
        server.log.warning(
            "Open-file limit %s is below worker_connections %s", want, worker_connections
        )


def post_worker_init(worker: t.Any) -> None:
    """End open streams when the worker is told to stop (SIGTERM, SIGINT, SIGQUIT).

    gunicorn's worker only stops accepting and waits for open requests, and
    an event stream never finishes by itself. Ending the streams lets the
    worker exit within seconds; clients reconnect (to another worker) and
    resume with ``Last-Event-ID``.
    """
    from .response import end_streams

    def spawn_end_streams() -> None:
        if worker.__class__.__name__.startswith("Gevent"):
            import gevent

            gevent.spawn(end_streams)
        else:
            import threading

            threading.Thread(target=end_streams, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(
            sig: int, frame: t.Any, previous: t.Callable[[int, t.Any], t.Any] = previous
        ) -> None:
            spawn_end_streams()
            previous(sig, frame)

        signal.signal(signum, handler)
