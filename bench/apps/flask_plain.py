"""(1) flask-plain: ``Response(generator, mimetype="text/event-stream")``.

What Flask users write today: the generator formats each event itself and
runs in the request greenlet; every yield is one write.
"""

from __future__ import annotations

import json
import time
import typing as t

from flask import Flask, Response, request

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
