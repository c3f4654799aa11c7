"""(1) flask-plain: ``Response(generator, mimetype="text/event-stream")``.

What Flask users write today: the generator formats each event itself and
runs in the request greenlet; every yield is one write.

Scenario D (the ``flask-plain-fanout`` row) is the broadcast loop users write
by hand: ``GET /bcast`` puts a ``gevent.queue.Queue`` per client into a set,
its generator waits on it and formats each message it gets
(``f"data: {message}\n\n"``); ``POST /publish`` JSON-encodes the message
once and puts it into every queue.
"""

from __future__ import annotations

import json
import time
import typing as t

from flask import Flask, Response, request
from gevent.queue import Empty, Queue

from .common import (
    DEFAULT_PACED_INTERVAL,
    DEFAULT_PACED_N,
    DEFAULT_TOKENS,
    HEARTBEAT,
    float_arg,
    int_arg,
    make_chunk,
    pace,
)

app = Flask(__name__)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/idle")
def idle() -> Response:
    def gen() -> t.Iterator[str]:
        yield ":\n"
        while True:
            time.sleep(HEARTBEAT)
            yield ": ping\n"

    return Response(gen(), mimetype="text/event-stream")


@app.get("/tokens")
def tokens() -> Response:
    n = int_arg(request.args, "n", DEFAULT_TOKENS)

    def gen() -> t.Iterator[str]:
        for _ in range(n):
            yield f"data: {json.dumps(make_chunk())}\n\n"

    return Response(gen(), mimetype="text/event-stream")


@app.get("/paced")
def paced() -> Response:
    n = int_arg(request.args, "n", DEFAULT_PACED_N)
    interval = float_arg(request.args, "interval", DEFAULT_PACED_INTERVAL)

    def gen() -> t.Iterator[str]:
        t0 = time.time()
        for i in range(n):
            pace(t0, i, interval, time.sleep)
            yield f"data: {json.dumps({'seq': i, 't': time.time()})}\n\n"

    return Response(gen(), mimetype="text/event-stream")


#: The queues of the open subscribers (scenario D).
SUBSCRIBERS: set[Queue] = set()


@app.get("/bcast")
def bcast() -> Response:
    def gen() -> t.Iterator[str]:
        queue: Queue = Queue()
        SUBSCRIBERS.add(queue)
        try:
            yield ":\n"
            while True:
                try:
                    message = queue.get(timeout=HEARTBEAT)
                except Empty:
                    yield ": ping\n"
                    continue
                yield f"data: {message}\n\n"
        finally:
            SUBSCRIBERS.discard(queue)

    return Response(gen(), mimetype="text/event-stream")


@app.post("/publish")
def publish() -> dict[str, t.Any]:
    seq = int_arg(request.args, "seq", 0)
    sent = time.time()
    message = json.dumps({"seq": seq, "t": sent}, separators=(",", ":"))
    for queue in tuple(SUBSCRIBERS):
        queue.put_nowait(message)
    return {"fanout_s": time.time() - sent}
