"""(0) bare: a plain WSGI callable (no Flask) under gunicorn's gevent worker.

It writes pre-encoded SSE bytes, one WSGI chunk (so one ``sendall``) per
event: the floor every other server is compared with.
"""

from __future__ import annotations

import time
import typing as t
from urllib.parse import parse_qs

import gevent

from .common import (
    CHUNK_WIRE,
    DEFAULT_PACED_INTERVAL,
    DEFAULT_PACED_N,
    DEFAULT_TOKENS,
    HEARTBEAT,
    float_arg,
    int_arg,
    pace,
)

HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
]


def _idle() -> t.Iterator[bytes]:
    yield b":\n"
    while True:
        gevent.sleep(HEARTBEAT)
        yield b": ping\n"


def _tokens(n: int) -> t.Iterator[bytes]:
    wire = CHUNK_WIRE
    for _ in range(n):
        yield wire


def _paced(n: int, interval: float) -> t.Iterator[bytes]:
    t0 = time.time()
    for i in range(n):
        pace(t0, i, interval, gevent.sleep)
        yield b'data: {"seq":%d,"t":%.6f}\n\n' % (i, time.time())


def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    args = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/idle":
        body: t.Iterable[bytes] = _idle()
    elif path == "/tokens":
        body = _tokens(int_arg(args, "n", DEFAULT_TOKENS))
    elif path == "/paced":
        body = _paced(
            int_arg(args, "n", DEFAULT_PACED_N), float_arg(args, "interval", DEFAULT_PACED_INTERVAL)
        )
    elif path == "/health":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    start_response("200 OK", HEADERS)
    return body
