"""The metrics page's app: settings from the environment, metrics included."""

from __future__ import annotations

from flask import Flask

from flask_evstream import EvStream, sse_route

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_EVSTREAM_METRICS=true, ...
sse = EvStream(app)


@app.get("/news")
@sse_route
def news() -> object:
    return sse.subscribe("news")
