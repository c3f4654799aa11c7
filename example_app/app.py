"""The demo app.

Run it with gunicorn and gevent workers::

    gunicorn -c python:flask_evstream.gunicorn_conf example_app.app:app
"""

from __future__ import annotations

import time
import typing as t

from flask import Flask, abort, render_template, request

from flask_evstream import Event, EvStream, last_event_id, parse_event_id, sse_route

app = Flask(__name__)
app.config.from_prefixed_env("DEMO")
EvStream(app)  # validates the EVSTREAM_* config at start-up

TEXT = (
    "Server-Sent Events keep one HTTP response open and write each event as it"
    " is ready. flask-evstream turns a generator into such a response."
)


@app.get("/")
def index() -> str:
    return render_template("index.html")


@app.get("/clock")
@sse_route(retry=3000)
def clock() -> t.Iterator[dict[str, float]]:
    """One event a second, for as long as the page is open."""
    while True:
        yield {"now": time.time()}
        time.sleep(1)


@app.post("/chat")
@sse_route()
def chat() -> t.Iterator[t.Any]:
    """Stream a reply word by word, as a chat model would (POST + fetch)."""
    prompt = (request.get_json(silent=True) or {}).get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        abort(400, "Send JSON with a non-empty 'prompt'")
    for word in f"You said: {prompt}. {TEXT}".split(" "):
        yield {"choices": [{"delta": {"content": word + " "}}]}
        time.sleep(0.05)
    yield Event(data="[DONE]")


@app.get("/job")
@sse_route(ids=True)
def job() -> t.Iterator[Event]:
    """Progress of a job in 20 steps; a reconnect resumes after the last id."""
    start = min(parse_event_id(last_event_id()) or 0, 20)  # client input: never a 500
    for step in range(start + 1, 21):
        time.sleep(0.2)
        yield Event({"step": step, "of": 20}, event="progress")
    yield Event("done", event="done")
