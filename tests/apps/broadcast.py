"""A broadcast app for the server tests; EVSTREAM_BROKER_URL comes from the
environment (memory:// by default)."""

from __future__ import annotations

import os
import typing as t

from flask import Flask, jsonify, request

from flask_evstream import EvStream, Subscription, last_event_id, live_streams, sse_route

app = Flask(__name__)
app.config.update(
    EVSTREAM_BROKER_URL=os.environ.get("EVSTREAM_BROKER_URL", "memory://"),
    EVSTREAM_HEARTBEAT=float(os.environ.get("TEST_HEARTBEAT", "0.5")),
    EVSTREAM_HISTORY=int(os.environ.get("TEST_HISTORY", "1000")),
    EVSTREAM_QUEUE_SIZE=int(os.environ.get("TEST_QUEUE_SIZE", "1000")),
)
sse = EvStream(app)


@sse.authorize
def may_read(channel: str) -> bool:
    return not channel.startswith("private")


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(pid=os.getpid(), live=live_streams(), subscriptions=sse.broker.hub.count())


@app.post("/publish/<channel>")
def publish(channel: str) -> t.Any:
    body = request.get_json()
    return {"id": sse.publish(channel, body["data"], event=body.get("event"))}


@app.get("/sub")
@sse_route()
def sub() -> Subscription:
    """A plain relay: the subscription is read in the request's greenlet."""
    return sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())


@app.get("/gen")
@sse_route()
def gen() -> t.Iterator[t.Any]:
    """The same through a generator (yield from)."""
    yield from sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())
