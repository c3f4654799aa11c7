"""The resumable-stream benchmark app: the same token stream as a plain
``@sse_route`` and as ``@sse_route(resumable=True)``, on the broker
``BENCH_BROKER_URL`` (``memory://`` or a Redis URL).

``/plain?n=N`` and ``/resumable?n=N``: ``N`` events of CHUNK_JSON (an
OpenAI-chunk-sized JSON text) in a tight loop. ``/plain-idle`` and
``/resumable-idle``: one event, then a generator asleep for ten minutes
(per-stream memory). ``/stats``: the worker's RSS and counts.
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask, jsonify, request

from flask_evstream import EvStream, live_streams, producers, sse_route

from .common import CHUNK_JSON, int_arg

app = Flask(__name__)
app.config["EVSTREAM_BROKER_URL"] = os.environ.get("BENCH_BROKER_URL", "memory://")
app.config["EVSTREAM_HEARTBEAT"] = 30.0
app.config["EVSTREAM_RESUME_MAX_EVENTS"] = 1_000_000
app.config["EVSTREAM_RESUME_MAX_BYTES"] = 1 << 30
sse = EvStream(app)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(rss_kib=_rss_kib(), live=live_streams(), producers=producers())


def _tokens() -> t.Iterator[str]:
    for _ in range(int_arg(request.args, "n", 10_000)):
        yield CHUNK_JSON


@app.get("/plain")
@sse_route()
def plain() -> t.Iterator[str]:
    return _tokens()


@app.get("/resumable")
@sse_route(resumable=True)
def resumable() -> t.Iterator[str]:
    return _tokens()


def _idle() -> t.Iterator[str]:
    yield "hello"
    time.sleep(600)


@app.get("/plain-idle")
@sse_route()
def plain_idle() -> t.Iterator[str]:
    return _idle()


@app.get("/resumable-idle")
@sse_route(resumable=True)
def resumable_idle() -> t.Iterator[str]:
    return _idle()
