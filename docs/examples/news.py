"""Broadcast channels: publish once, every subscriber in every worker gets it."""

import click
from flask import Flask, abort, request, session

from flask_evstream import Event, EvStream, last_event_id, sse_route

app = Flask(__name__)
app.config["SECRET_KEY"] = "dev"
# FLASK_EVSTREAM_BROKER_URL=redis://... in the environment sets EVSTREAM_BROKER_URL.
app.config.from_prefixed_env()
sse = EvStream(app)  # EVSTREAM_BROKER_URL: "memory://" (the default),
# "redis://host:6379/0" or "redis+cluster://host:7000/"


# [publish]
@app.post("/news")
def post_news():
    event_id = sse.publish("news", {"title": request.form["title"]}, event="flash")
    return {"id": event_id}


@app.get("/news/stream")
@sse_route()
def news():
    return sse.subscribe("news", last_event_id=last_event_id())


# [/publish]


# [authorize]
@sse.authorize
def may_read(channel):
    return channel == "news" or channel == f"user:{session.get('user')}"


# [/authorize]


# [several]
@app.get("/me/stream")
@sse_route()
def my_stream():
    user = session.get("user")
    if user is None:
        abort(401)
    # Two channels in one stream; one Last-Event-ID resumes both.
    return sse.subscribe(["news", f"user:{user}"], last_event_id=last_event_id())


# [/several]


# [generator]
@app.get("/news/welcome")
@sse_route()
def news_with_welcome():
    yield Event({"welcome": session.get("user", "guest")}, event="welcome")
    yield from sse.subscribe("news", last_event_id=last_event_id())


# [/generator]


# [cli]
@app.cli.command("announce")
@click.argument("title")
def announce(title):
    """Publish from a command (no request; with Redis, from another host)."""
    event_id = sse.publish("news", {"title": title}, event="flash")
    click.echo(f"published {event_id}")


# [/cli]


@app.post("/login")
def login():
    session["user"] = request.form["user"]
    return {"user": session["user"]}
