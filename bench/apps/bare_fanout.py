"""(D0) bare-fanout: scenario D's floor, a plain WSGI callable (no Flask)
under gunicorn's gevent worker.

``GET /bcast`` gives each subscriber a ``gevent.queue.Queue``; its WSGI
iterator waits on ``queue.get()`` and yields the bytes it gets (one chunk,
so one ``sendall``, per event), or a keep-alive comment after
``BENCH_HEARTBEAT`` seconds of silence. ``POST /publish?seq=N`` takes
``time.time()``, encodes the event once and puts the same bytes into every
subscriber's queue.
"""

from __future__ import annotations

import json
import time
import typing as t
from urllib.parse import parse_qs

from gevent.queue import Empty, Queue

from .common import HEARTBEAT, int_arg

HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
]

#: The queues of the open subscribers.
SUBSCRIBERS: set[Queue] = set()


def _subscriber() -> t.Iterator[bytes]:
    queue: Queue = Queue()
    SUBSCRIBERS.add(queue)
    get = queue.get
    try:
        yield b":\n"
        while True:
            try:
                yield get(timeout=HEARTBEAT)
            except Empty:
                yield b": ping\n"
    finally:
        SUBSCRIBERS.discard(queue)


def _publish(seq: int) -> bytes:
    sent = time.time()
    wire = b'data: {"seq":%d,"t":%.6f}\n\n' % (seq, sent)
    for queue in tuple(SUBSCRIBERS):
        queue.put_nowait(wire)
    return json.dumps({"fanout_s": time.time() - sent}).encode()


def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/bcast":
        start_response("200 OK", HEADERS)
        return _subscriber()
    if path == "/publish" and environ.get("REQUEST_METHOD") == "POST":
        body = _publish(int_arg(parse_qs(environ.get("QUERY_STRING", "")), "seq", 0))
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
    if path == "/health":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return [b""]
