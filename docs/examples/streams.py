"""Stream views: the options of ``@sse_route``, what passes through, errors."""

import time

from flask import Flask, abort, request, session

from flask_evstream import Event, EvStream, sse_route

app = Flask(__name__)
app.config["SECRET_KEY"] = "dev"  # for the session below
EvStream(app)  # optional: validates the EVSTREAM_* config at start-up


def model(prompt):
    """Stands in for a language model: the prompt back, word by word."""
    for word in f"You said: {prompt}".split(" "):
        yield word + " "


# [chat]
@app.post("/chat")
@sse_route()
def chat():
    prompt = request.get_json()["prompt"]  # the request lives as long as the stream
    for token in model(prompt):
        yield token  # a str is the data as it is
    yield Event(data="[DONE]")


# [/chat]


# [options]
@app.get("/prices")
@sse_route(retry=5000, heartbeat=5, headers={"X-Feed": "prices"})
def prices():
    for price in (101.5, 101.25, 102):
        yield Event({"price": price}, event="price")
        time.sleep(0.1)


# [/options]


def topic_events(topic):
    yield {"topic": topic}


# [passthrough]
@app.get("/topic")
@sse_route()
def topic():
    name = request.args.get("name")
    if not name:
        return "", 204  # a response or (body, status): passed to Flask as it is
    return topic_events(name)  # a generator (or any iterable): streamed


# [/passthrough]


# [errors]
@app.get("/inbox")
@sse_route()
def inbox():
    user = session.get("user")
    if user is None:
        abort(403)  # in the view: a plain 403, no stream
    session["last_seen"] = time.time()  # the session is saved with the headers
    return inbox_events(user)


def inbox_events(user):
    if user == "banned":
        abort(403)  # before the first event: still a plain 403
    yield {"hello": user}
    time.sleep(0.2)
    raise RuntimeError("the feed broke")  # after it: logged, the stream ends


# [/errors]


@app.post("/login")
def login():
    session["user"] = request.get_json()["user"]
    return {"user": session["user"]}
