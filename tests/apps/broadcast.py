"""A broadcast app for the server tests; EVSTREAM_BROKER_URL comes from the
environment (memory:// by default)."""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask, jsonify, request

from flask_evstream import (
    BrokerUnavailable,
    Event,
    EvStream,
    Subscription,
    last_event_id,
    live_streams,
    sse_route,
    subscribers,
)

app = Flask(__name__)
app.config.update(
    EVSTREAM_BROKER_URL=os.environ.get("EVSTREAM_BROKER_URL", "memory://"),
    EVSTREAM_HEARTBEAT=float(os.environ.get("TEST_HEARTBEAT", "0.5")),
    EVSTREAM_HISTORY=int(os.environ.get("TEST_HISTORY", "1000")),
    EVSTREAM_QUEUE_SIZE=int(os.environ.get("TEST_QUEUE_SIZE", "1000")),
    EVSTREAM_REDIS_TIMEOUT=float(os.environ.get("TEST_REDIS_TIMEOUT", "10")),
)
sse = EvStream(app)

#: The process that imported this module: gunicorn's master under --preload.
LOADED_IN = os.getpid()
if os.environ.get("TEST_PUBLISH_AT_IMPORT"):
    # Use Redis before gunicorn forks (what an app that publishes a start-up
    # event does under --preload): the master then holds a connection.
    sse.publish("boot", "loaded")


@sse.authorize
def may_read(channel: str) -> bool:
    return not channel.startswith("private")


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(
        pid=os.getpid(),
        loaded_in=LOADED_IN,
        live=live_streams(),
        subscriptions=subscribers(),
        rss=rss_kib(),
    )


@app.post("/publish/<channel>")
def publish(channel: str) -> t.Any:
    body = request.get_json()
    try:
        return {"id": sse.publish(channel, body["data"], event=body.get("event"))}
    except BrokerUnavailable as e:
        return {"error": str(e)}, 503


@app.get("/sub")
@sse_route()
def sub() -> Subscription:
    """A plain relay: the subscription is read in the request's greenlet."""
    return sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())


@app.get("/sub-pid")
@sse_route()
def sub_pid() -> t.Iterator[t.Any]:
    """First an event naming the worker that serves this stream, then the
    subscription (from ``Last-Event-ID``, so nothing depends on when it
    registers)."""
    yield Event(str(os.getpid()), event="pid")
    yield from sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())


@app.get("/gen")
@sse_route()
def gen() -> t.Iterator[t.Any]:
    """The same through a generator (yield from)."""
    yield from sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())


@app.get("/work")
@sse_route()
def work() -> t.Iterator[t.Any]:
    """A generator that works between events: closing the stream must
    unsubscribe even while the generator is not waiting in the subscription."""
    for event in sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id()):
        yield event
        time.sleep(float(request.args.get("work", "5")))
