"""(2) evstream: the same views written with ``@sse_route``.

Also the subscription views: ``/idle-sub`` (scenario A's ``evstream-sub``
row) and ``/bcast`` + ``POST /publish`` (scenario D). The broker is
``BENCH_BROKER_URL`` (default ``memory://``; ``run.py`` sets a ``redis://``
URL for ``evstream-redis``). ``BENCH_METRICS=1`` turns the extension's
Prometheus metrics on.
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask, request

from flask_evstream import Event, EvStream, sse_route

from .common import (
    BCAST,
    CHUNK_JSON,
    CHUNK_WIRE,
    DEFAULT_PACED_INTERVAL,
    DEFAULT_PACED_N,
    DEFAULT_TOKENS,
    HEARTBEAT,
    float_arg,
    int_arg,
    make_chunk,
    pace,
)

#: The token chunk as one Event, encoded once (``/tokens?prebuilt=1``): the
#: same per-event work as the bare app, to separate the extension's own cost
#: from JSON encoding. Not what the headline ``evstream`` row measures.
PREBUILT = Event(CHUNK_WIRE[len(b"data: ") : -2].decode())

app = Flask(__name__)
app.config["EVSTREAM_HEARTBEAT"] = HEARTBEAT
app.config["EVSTREAM_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "memory://")
# BENCH_METRICS=1: the same views with Prometheus metrics on (for their
# cost; with PROMETHEUS_MULTIPROC_DIR set, as under several workers).
app.config["EVSTREAM_METRICS"] = os.environ.get("BENCH_METRICS", "0") == "1"
sse = EvStream(app)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/idle")
@sse_route
def idle() -> t.Iterator[t.Any]:
    # Blocked for good: only the extension's heartbeats are written.
    while True:
        time.sleep(3600)
        yield {}


@app.get("/idle-sub")
@sse_route
def idle_sub() -> t.Any:
    # The lean path of a notification stream: a subscription returned from
    # the view is read in the request's own greenlet (no pump greenlet).
    # Nothing is ever published to "idle": only heartbeats.
    return sse.subscribe("idle")


@app.get("/tokens")
@sse_route
def tokens() -> t.Iterator[t.Any]:
    n = int_arg(request.args, "n", DEFAULT_TOKENS)
    if request.args.get("prebuilt"):
        event = PREBUILT
        return (event for _ in range(n))
    if request.args.get("str"):
        # A pre-serialized JSON str, built once: the same payload bytes as
        # the bare app's; the extension still turns it into an event (and
        # bytes) per item.
        text = CHUNK_JSON
        return (text for _ in range(n))
    return (make_chunk() for _ in range(n))


@app.get("/paced")
@sse_route
def paced() -> t.Iterator[t.Any]:
    n = int_arg(request.args, "n", DEFAULT_PACED_N)
    interval = float_arg(request.args, "interval", DEFAULT_PACED_INTERVAL)

    def gen() -> t.Iterator[t.Any]:
        t0 = time.time()
        for i in range(n):
            pace(t0, i, interval, time.sleep)
            yield {"seq": i, "t": time.time()}

    return gen()


@app.get("/bcast")
@sse_route
def bcast() -> t.Any:
    return sse.subscribe(BCAST)


@app.post("/publish")
def publish() -> dict[str, t.Any]:
    seq = int_arg(request.args, "seq", 0)
    sent = time.time()
    sse.publish(BCAST, {"seq": seq, "t": sent})
    return {"fanout_s": time.time() - sent}
