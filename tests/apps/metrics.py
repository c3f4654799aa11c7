"""An app with metrics on (served at /metrics) for the metrics server tests.

EVSTREAM_BROKER_URL comes from the environment (a Redis shared by the
workers, so publishes, replays and resumes work whichever worker answers).
Every response says which worker answered (``X-Pid``), and every stream's
first event holds the worker's pid.
"""

from __future__ import annotations

import os
import time
import typing as t

from flask import Flask, Response, jsonify, request

from flask_evstream import EvStream, last_event_id, live_streams, sse_route, subscribers
from flask_evstream.resumable import producers

app = Flask(__name__)
app.config.update(
    EVSTREAM_BROKER_URL=os.environ.get("EVSTREAM_BROKER_URL", "memory://"),
    EVSTREAM_HEARTBEAT=float(os.environ.get("TEST_HEARTBEAT", "0.5")),
    EVSTREAM_HISTORY=int(os.environ.get("TEST_HISTORY", "1000")),
    EVSTREAM_QUEUE_SIZE=int(os.environ.get("TEST_QUEUE_SIZE", "1000")),
    EVSTREAM_METRICS=True,
    EVSTREAM_METRICS_PATH="/metrics",
)
sse = EvStream(app)
PID = os.getpid()


@sse.authorize
def may_read(name: str) -> bool:
    return request.headers.get("X-User") != "mallory"


@app.after_request
def say_who(response: Response) -> Response:
    response.headers["X-Pid"] = str(PID)
    return response


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(pid=PID, live=live_streams(), subscriptions=subscribers(), producers=producers())


@app.post("/publish/<channel>")
def publish(channel: str) -> t.Any:
    body = request.get_json()
    return {"id": sse.publish(channel, body["data"])}


def spin() -> None:
    """Keep the worker busy (no greenlet switch) for ``spin`` seconds: the
    other worker accepts the connections that come meanwhile, so a burst of
    requests spreads over both."""
    end = time.monotonic() + float(request.args.get("spin", "0"))
    while time.monotonic() < end:
        pass


@app.get("/events")
@sse_route()
def events() -> t.Iterator[t.Any]:
    """``n`` events, ``gap`` seconds apart (heartbeats between them when the
    gap is longer than the heartbeat); the view itself takes ``wait``
    seconds before it returns them."""
    spin()
    time.sleep(float(request.args.get("wait", "0")))
    n = int(request.args.get("n", "3"))
    gap = float(request.args.get("gap", "0"))

    def generate() -> t.Iterator[t.Any]:
        for i in range(n):
            if i and gap:
                time.sleep(gap)
            yield {"pid": PID, "i": i, "pad": "x" * (i % 7)}

    return generate()


@app.get("/hold")
@sse_route()
def hold() -> t.Iterator[t.Any]:
    """One event with the pid, then the channel ``hold`` (a subscription in
    the generator) until the client goes away."""
    spin()

    def generate() -> t.Iterator[t.Any]:
        yield {"pid": PID}
        yield from sse.subscribe("hold")

    return generate()


@app.get("/sub")
@sse_route()
def sub() -> t.Any:
    """A subscription read in place (replay after Last-Event-ID, then live)."""
    return sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())


@app.post("/chat")
@sse_route(resumable=True)
def chat() -> t.Iterator[str]:
    body = request.get_json()
    for i in range(int(body["n"])):
        yield f"token {i}"
        time.sleep(float(body.get("delay", 0.02)))


@app.get("/feed")
@sse_route(resumable=True)
def feed() -> t.Iterator[str]:
    for i in range(int(request.args.get("n", "3"))):
        yield f"item {i}"
