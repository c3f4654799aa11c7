"""CORS and authentication recipes, as docs/deploy.rst shows them (the docs
include the parts between the ``# [name]`` markers from this file, so what
the docs say is what the tests run).

The same app runs twice in the tests: as the page's origin (``/page``,
``/token``) and as the stream server on another origin, which allows the
page's origin, ``TEST_PAGE_ORIGIN``, with credentials.
"""

from __future__ import annotations

import os
import threading
import time
import typing as t

from flask import Flask, abort, g, jsonify, render_template_string, request, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from flask_evstream import Event, EvStream, last_event_id, sse_route

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get("TEST_SECRET", "dev-secret"),
    SESSION_COOKIE_NAME="api_session",
    EVSTREAM_HEARTBEAT=1.0,
    EVSTREAM_RETRY=200,
)
sse = EvStream(app)

# [cors]
from flask_cors import CORS  # noqa: E402

CORS(
    app,
    origins=[os.environ.get("TEST_PAGE_ORIGIN", "https://app.example.com")],
    supports_credentials=True,  # cookies, with EventSource's withCredentials
    expose_headers=["Content-Location"],  # evstream.js resumes there
)
# [/cors]


def current_user() -> str | None:
    """The user of a token (``g.user``, set by the view) or of the session."""
    return g.get("user") or session.get("user")


@sse.authorize
def may(name: str) -> bool:
    # Channels, and resumes and stops of resumable streams: a known user.
    return current_user() is not None


@app.post("/login")
def login() -> t.Any:
    session["user"] = request.get_json()["user"]
    return jsonify(user=session["user"])


# [cookie]
@app.get("/me/events")
@sse_route
def my_events() -> t.Any:
    user = session.get("user")
    if user is None:
        abort(401)  # before the stream starts: a plain 401

    def events() -> t.Iterator[t.Any]:
        yield Event({"user": user}, event="hello")
        yield from sse.subscribe("news", last_event_id=last_event_id())

    return events()


# [/cookie]


@app.post("/chat")
@sse_route(resumable=True)
def chat() -> t.Any:
    if "user" not in session:
        abort(401)
    n = int(request.get_json().get("n", 20))

    def tokens() -> t.Iterator[str]:
        for i in range(n):
            yield f"token {i}"
            time.sleep(0.1)

    return tokens()


# [token]
TOKEN_MAX_AGE = float(os.environ.get("TEST_TOKEN_MAX_AGE", "60"))
tokens = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="event-stream")


@app.get("/token")
def token() -> t.Any:
    """Made by the page's server for its logged-in user (here: anyone)."""
    return jsonify(token=tokens.dumps({"user": "ada"}), max_age=TOKEN_MAX_AGE)


@app.get("/feed")
@sse_route
def feed() -> t.Any:
    try:
        claims, signed_at = tokens.loads(
            request.args.get("token", ""), max_age=TOKEN_MAX_AGE, return_timestamp=True
        )
    except SignatureExpired:
        abort(401)
    except BadSignature:
        abort(403)
    g.user = claims["user"]
    expires = signed_at.timestamp() + TOKEN_MAX_AGE

    def events() -> t.Iterator[t.Any]:
        with sse.subscribe("news", last_event_id=last_event_id()) as news:
            # End the stream when the token expires, events or not: closing
            # the subscription ends the loop.
            timer = threading.Timer(max(0.0, expires - time.time()), news.close)
            timer.start()
            try:
                yield from news
            finally:
                timer.cancel()
        # The page gets a new token and reconnects with ?lastEventId=...
        yield Event({"reason": "token expired"}, event="reauth")

    return events()


# [/token]


@app.post("/publish")
def publish() -> t.Any:
    return jsonify(id=sse.publish("news", request.get_json()))


@app.get("/stats")
def stats() -> t.Any:
    return jsonify(ok=True)


PAGE = """<!doctype html><meta charset="utf-8"><title>cors</title>
<script type="module">
import * as evs from "/evstream/evstream.js";
window.evs = evs;
window.api = {{ api | tojson }};
window.ready = true;
</script>"""


@app.get("/page")
def page() -> str:
    return render_template_string(PAGE, api=request.args["api"])
