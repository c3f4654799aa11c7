"""The app the server tests run under a real gunicorn (gevent or gthread worker).

Its ``/stats`` endpoint lets a test observe, from outside the process, what
the streams hold: open streams, generators whose ``finally`` ran, live
greenlets and threads.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import typing as t

from flask import Flask, abort, g, jsonify, request, session

from flask_evstream import Event, EvStream, last_event_id, live_streams, parse_event_id, sse_route

from . import openai_chunks

app = Flask(__name__)
app.secret_key = "test"
app.config["EVSTREAM_HEARTBEAT"] = float(os.environ.get("TEST_HEARTBEAT", "0.5"))
EvStream(app)

finally_count = 0
started_count = 0
gates: dict[str, threading.Event] = {}


def _gate(name: str) -> threading.Event:
    # threading.Event is gevent's under the gevent worker (monkey-patched).
    return gates.setdefault(name, threading.Event())


def _greenlets() -> int:
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return 0
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(
        pid=os.getpid(),
        live=live_streams(),
        live_app=live_streams(app),
        started=started_count,
        finally_count=finally_count,
        greenlets=_greenlets(),
        threads=threading.active_count(),
        gc_frozen=gc.get_freeze_count(),
    )


@app.get("/events")
@sse_route()
def events() -> t.Iterator[t.Any]:
    for i in range(int(request.args.get("n", "3"))):
        yield {"i": i}


#: How many events each ``/bulk/<name>`` generator has made so far.
bulk_made: dict[str, int] = {}


@app.get("/bulk/<name>")
@sse_route()
def bulk(name: str) -> t.Iterator[t.Any]:
    """``n`` events of ``size`` bytes of data each, as fast as the client
    (or a proxy in between) takes them; ``/bulk-made/<name>`` tells how many
    the generator has made."""
    pad = "x" * int(request.args.get("size", "131072"))
    for i in range(int(request.args.get("n", "512"))):
        bulk_made[name] = i + 1
        yield Event(pad, id=str(i))


@app.get("/bulk-made/<name>")
def bulk_made_view(name: str) -> t.Any:
    return jsonify(made=bulk_made.get(name, 0), live=live_streams())


@app.get("/paced")
@sse_route()
def paced() -> t.Iterator[t.Any]:
    gap = float(request.args.get("gap", "0.2"))
    for i in range(int(request.args.get("n", "5"))):
        yield {"i": i, "sent": time.time()}
        time.sleep(gap)


@app.get("/lockstep/<name>")
@sse_route()
def lockstep(name: str) -> t.Iterator[t.Any]:
    """Yield event i, then wait until the client says it has it."""
    for i in range(int(request.args.get("n", "3"))):
        yield {"i": i}
        gate = _gate(f"{name}-{i}")
        if not gate.wait(10):
            yield Event("timeout", event="error")
            return


@app.post("/release/<name>")
def release(name: str) -> t.Any:
    _gate(name).set()
    return "", 204


#: Per barrier name: requests that arrived, and those still open.
arrived: dict[str, int] = {}
held: dict[str, int] = {}


@app.get("/barrier/<name>")
@sse_route()
def barrier(name: str) -> t.Iterator[t.Any]:
    """Count this request in; once ``n`` requests of ``name`` have arrived,
    yield one event saying so, then stay open (heartbeats only) until the
    client goes away. A stream that got the event was open at the same time
    as ``n - 1`` others, whatever the timing. One that waited ``timeout``
    seconds gets a ``timeout`` event instead and ends."""
    n = int(request.args.get("n", "1"))
    timeout = float(request.args.get("timeout", "60"))
    arrived[name] = arrival = arrived.get(name, 0) + 1
    held[name] = held.get(name, 0) + 1
    try:
        everyone = _gate(f"barrier-{name}")
        if arrival >= n:
            everyone.set()
        if not everyone.wait(timeout):
            yield Event(f"only {arrived[name]} of {n} arrived", event="timeout")
            return
        yield {"arrival": arrival, "arrived": arrived[name]}
        _gate("never").wait()
        yield "never"
    finally:
        held[name] -= 1


@app.get("/barrier-stats/<name>")
def barrier_stats(name: str) -> t.Any:
    return jsonify(arrived=arrived.get(name, 0), held=held.get(name, 0))


@app.get("/blocked")
@sse_route(retry=1000)
def blocked() -> t.Iterator[t.Any]:
    """One event, then block (sleeping) until the client goes away."""
    global started_count, finally_count
    started_count += 1
    try:
        yield Event("started", event="status")
        time.sleep(3600)
        yield "never"
    finally:
        finally_count += 1


@app.get("/quiet")
@sse_route()
def quiet() -> t.Iterator[t.Any]:
    """No events at all: only the opening and heartbeats."""
    global started_count, finally_count
    started_count += 1
    try:
        _gate("never").wait()
        yield "never"
    finally:
        finally_count += 1


@app.get("/silent")
@sse_route(heartbeat=60)
def silent() -> t.Iterator[t.Any]:
    """The opening, then nothing for a minute: no heartbeat either."""
    _gate("never").wait(60)
    yield "late"


@app.post("/answer")
@sse_route(resumable=True)
def answer() -> t.Iterator[t.Any]:
    """A resumable answer of ``n`` events."""
    for i in range(int(request.args.get("n", "5"))):
        yield {"i": i}


@app.get("/resume")
@sse_route(ids=True)
def resume() -> t.Iterator[t.Any]:
    start = parse_event_id(last_event_id()) or 0
    for step in range(start + 1, start + 4):
        yield {"step": step}


@app.get("/maybe")
@sse_route()
def maybe() -> t.Any:
    if request.args.get("stop"):
        return "", 204
    if request.args.get("auth"):
        return "log in first", 401
    return iter(["go"])


@app.get("/forbidden")
@sse_route()
def forbidden() -> t.Iterator[t.Any]:
    abort(403)
    yield "never"


@app.get("/boom")
@sse_route()
def boom() -> t.Iterator[t.Any]:
    yield "one"
    yield "two"
    raise RuntimeError("boom in the generator")


@app.post("/chat")
@sse_route()
def chat() -> t.Iterator[t.Any]:
    prompt = request.get_json()["prompt"]
    for word in prompt.split():
        yield {"token": word}
    yield Event(data="[DONE]")


@app.post("/v1/chat/completions")
@sse_route()
def openai_chat() -> t.Iterator[t.Any]:
    """What the OpenAI API streams, so the ``openai`` client can read it."""
    return openai_chunks(request.get_json())


@app.get("/context")
@sse_route()
def context() -> t.Iterator[t.Any]:
    g.value = request.args.get("v")
    yield {"arg": request.args.get("v"), "g": g.value, "user": session.get("user")}
    time.sleep(0.2)
    from flask import current_app

    yield {"app": current_app.name, "g": g.value, "path": request.path, "user": session.get("user")}


@app.post("/login")
def login() -> t.Any:
    session["user"] = request.form["user"]
    return "", 204


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>evstream test page</title>
<script>
window.events = [];
window.errors = 0;
window.opens = 0;
window.ended = false;
window.listen = (url, types) => {
  const source = new EventSource(url);
  const record = (e) => window.events.push(
    {type: e.type, data: e.data, id: e.lastEventId, at: Date.now()});
  source.onmessage = record;
  for (const type of types || []) source.addEventListener(type, record);
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => {
    window.errors += 1;
    if (source.readyState === EventSource.CLOSED) window.ended = true;
  };
  window.source = source;
};
window.chat = async (prompt) => {
  const response = await fetch("/chat", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt}),
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const chunks = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  return {type: response.headers.get("content-type"), chunks};
};
</script>
"""


@app.get("/page")
def page() -> t.Any:
    return PAGE


@app.get("/browser-resume")
@sse_route(ids=True, retry=50)
def browser_resume() -> t.Any:
    """Three events per connection; the browser reconnects with Last-Event-ID
    until step 9, then 204 tells it to stop."""
    last = int(last_event_id() or "0")
    if last >= 9:
        return "", 204
    return ({"step": step} for step in range(last + 1, last + 4))


TRICKY = [
    "plain",
    "two\nlines",
    "crlf\r\nline",
    "lone\rcr",
    " leading space",
    ":colon first",
    "trailing newline\n",
    "",
    "unicode \u00e9\u4e2d\U0001f600 and \u2028 not a break",
    "tab\tand\x0bvt\x0cff",
]


@app.get("/tricky")
@sse_route(retry=60000)
def tricky() -> t.Iterator[t.Any]:
    for i, text in enumerate(TRICKY):
        yield Event(text, event="tricky", id=f"t{i}")
    yield Event("end", event="end")


@app.get("/cpu")
@sse_route()
def cpu() -> t.Iterator[t.Any]:
    """A producer that computes between events without ever blocking (no
    greenlet switch): each event must still leave when it is yielded."""
    for i in range(4):
        end = time.monotonic() + 0.15
        while time.monotonic() < end:
            pass
        yield {"i": i, "sent": time.time()}
