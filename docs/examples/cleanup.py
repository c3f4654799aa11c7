"""A generator that blocks, and its clean-up when the client leaves."""

import time

from flask import Flask

from flask_evstream import live_streams, sse_route

app = Flask(__name__)
app.config["EVSTREAM_HEARTBEAT"] = 1.0  # notice a closed tab within 2 s

watchers = {"started": 0, "cleaned_up": 0}


# [watch]
@app.get("/watch")
@sse_route()
def watch():
    watchers["started"] += 1
    try:
        yield {"watching": True}
        time.sleep(3600)  # blocked in a call when the client leaves
        yield {"an hour": "later"}
    finally:
        watchers["cleaned_up"] += 1  # gevent: runs within two heartbeats


# [/watch]


@app.get("/stats")
def stats():
    return {"live": live_streams(), **watchers}
