"""Notifications: every open page hears of a new one at once."""

import time
from pathlib import Path

from flask import Flask, request

from flask_evstream import EvStream, last_event_id, sse_route

app = Flask(__name__)
app.config.from_prefixed_env()
sse = EvStream(app)


# [notify]
@app.post("/notify")
def notify():
    note = {"title": request.get_json()["title"], "at": time.time()}
    return {"id": sse.publish("notifications", note, event="notification")}, 201


@app.get("/notifications/stream")
@sse_route()
def notifications():
    return sse.subscribe("notifications", last_event_id=last_event_id())


# [/notify]


@app.get("/")
def page():
    return Path(__file__).with_name("notify.html").read_text()
