"""Resumable routes for the server tests. EVSTREAM_BROKER_URL comes from the
environment; TEST_REDIS_URL (the same Redis) counts what the generators do,
so a test can see it whatever worker or server ran them."""

from __future__ import annotations

import os
import time
import typing as t

import redis
from flask import Flask, jsonify, request

from flask_evstream import EvStream, live_streams, sse_route
from flask_evstream.resumable import producers, stream_id

from . import openai_chunks

app = Flask(__name__)
app.config.update(
    EVSTREAM_BROKER_URL=os.environ["EVSTREAM_BROKER_URL"],
    EVSTREAM_HEARTBEAT=float(os.environ.get("TEST_HEARTBEAT", "1")),
    EVSTREAM_RESUME_TTL=float(os.environ.get("TEST_RESUME_TTL", "600")),
)
sse = EvStream(app)
counts = redis.Redis.from_url(os.environ["TEST_REDIS_URL"], decode_responses=True)


@sse.authorize
def may(name: str) -> bool:
    return request.headers.get("X-User") != "mallory"


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(pid=os.getpid(), live=live_streams(), producers=producers())


@app.post("/chat")
@sse_route(resumable=True, retry=100)
def chat() -> t.Iterator[str]:
    body = request.get_json()
    sid = stream_id()
    counts.incr("test:posts")
    try:
        for i in range(int(body["n"])):
            counts.incr(f"test:tokens:{sid}")
            yield f"{body['prompt']} {i}"
            time.sleep(float(body.get("delay", 0.02)))
    finally:
        counts.rpush("test:finally", f"{sid} {os.getpid()}")


@app.get("/feed")
@sse_route(resumable=True)
def feed() -> t.Iterator[str]:
    for i in range(int(request.args.get("n", "20"))):
        yield f"item {i}"
        time.sleep(0.02)


@app.post("/v1/chat/completions")
@sse_route(resumable=True)
def openai_chat() -> t.Iterator[t.Any]:
    """The OpenAI format, resumable: the client must not see a difference."""
    return openai_chunks(request.get_json())


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>evstream.js</title>
<script type="module">
import { stream, resume, VERSION } from "/evstream/evstream.js";
window.evs = { stream, resume, VERSION };
window.ready = true;
</script>
"""


@app.get("/page")
def page() -> t.Any:
    return PAGE


@app.get("/fast")
@sse_route(resumable=True)
def fast() -> t.Iterator[str]:
    """As fast as the generator goes: the log is written in batches."""
    for i in range(int(request.args.get("n", "1000"))):
        yield f"f{i}"
