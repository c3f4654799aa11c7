"""A resumable chat answer, and the page that reads it with evstream.js."""

import time
from pathlib import Path

from flask import Flask, request

from flask_evstream import EvStream, sse_route

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_EVSTREAM_BROKER_URL=redis://... for many workers
sse = EvStream(app)  # memory:// in one process, redis:// across workers and hosts

ANSWER = (
    "Server-sent events are a one-way stream of text events over plain HTTP: the"
    " server writes, the browser reads, and a dropped connection comes back by"
    " itself with the id of the last event it got, so nothing is lost on the way."
)


def model(prompt):
    """Stands in for a language model that types its answer."""
    for word in ANSWER.split(" "):
        time.sleep(0.05)
        yield word + " "


# [chat]
@app.post("/chat")
@sse_route(resumable=True)
def chat():
    prompt = request.get_json()["prompt"]
    for token in model(prompt):  # runs to its end even if every reader leaves
        yield token
    yield "[DONE]"


# [/chat]


@app.get("/")
def page():
    return Path(__file__).with_name("chat.html").read_text()
