"""The app under test: a countdown stream and a news channel."""

import time

from flask import Flask, abort, request

from flask_evstream import EvStream, last_event_id, sse_route

sse = EvStream()


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(config or {})
    sse.init_app(app)

    @app.get("/countdown")
    @sse_route(ids=True, retry=2000)
    def countdown():
        start = int(request.args.get("from", 3))
        if start > 10:
            abort(400)
        return count_down(start)

    @app.post("/news")
    def post_news():
        return {"id": sse.publish("news", request.get_json(), event="news")}

    @app.get("/news/stream")
    @sse_route()
    def news():
        return sse.subscribe("news", last_event_id=last_event_id())

    return app


def count_down(start):
    for n in range(start, 0, -1):
        yield {"n": n}
        time.sleep(0.01)
    yield "liftoff"
