"""Resumable answers that only their owner may resume or stop."""

import redis
from flask import Blueprint, Flask, abort, current_app, request, session

from flask_evstream import EvStream, sse_route, stream_id

sse = EvStream()
bp = Blueprint("chat", __name__)


def create_app(redis_url="redis://localhost:6379/0"):
    app = Flask(__name__)
    app.config.update(SECRET_KEY="dev", EVSTREAM_BROKER_URL=redis_url)
    app.extensions["owners"] = redis.Redis.from_url(redis_url, decode_responses=True)
    sse.init_app(app)
    app.register_blueprint(bp)
    return app


def answer(prompt):
    for word in f"You asked: {prompt}".split(" "):
        yield word + " "


# [owner]
@sse.authorize
def may_read(name):
    if name.startswith("stream:"):  # a resume or a stop of a resumable stream
        owner = current_app.extensions["owners"].get(f"owner:{name[7:]}")
        return owner is not None and owner == session.get("user")
    return True  # channels


@bp.post("/chat")
@sse_route(resumable=True)
def chat():
    user = session.get("user")
    if user is None:
        abort(401)
    # stream_id(): the id of the stream this request starts.
    current_app.extensions["owners"].set(f"owner:{stream_id()}", user, ex=3600)
    return answer(request.get_json()["prompt"])


# [/owner]


@bp.post("/login")
def login():
    session["user"] = request.get_json()["user"]
    return {"user": session["user"]}
