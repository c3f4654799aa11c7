"""Numbered events and ``Last-Event-ID``: a job that resumes where the client was."""

from flask import Flask

from flask_evstream import last_event_id, parse_event_id, sse_route

app = Flask(__name__)

STEPS = ["fetch", "parse", "index", "publish"]


# [job]
@app.get("/job")
@sse_route(ids=True, retry=1000)
def job():
    # ids=True numbers the events 1, 2, 3...; a client that reconnects sends
    # the last one it received, and the numbering goes on from there.
    done = parse_event_id(last_event_id()) or 0  # None for no id, or garbage
    if done >= len(STEPS):
        return "", 204  # all sent: EventSource stops reconnecting
    return steps_after(done)


def steps_after(done):
    for step in STEPS[done:]:
        yield {"step": step}


# [/job]
