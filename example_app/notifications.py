"""Live notifications: a channel every open page reads with ``EventSource``.

``POST /notify`` (JSON ``{"title": ..., "body": ...}``, or the page's form)
publishes to the channel; every page, in every worker sharing the broker,
shows it at once. A page that lost its connection reconnects with
``Last-Event-ID`` and gets what it missed from the channel's history; when
the history no longer reaches back, the stream sends ``evstream-gap`` first
and the page reloads its list.
"""

from __future__ import annotations

import time
import typing as t

from flask import Blueprint, Response, jsonify, render_template, request

from flask_evstream import last_event_id, sse_route

from .extensions import sse

bp = Blueprint("notifications", __name__)

#: The channel of the notifications.
CHANNEL = "notifications"
#: The event type of one notification.
EVENT = "notification"
LEVELS = ("info", "success", "warning", "error")
MAX_TITLE = 120
MAX_BODY = 1000


@bp.get("/notifications")
def page() -> str:
    return render_template("notifications.html")


@bp.get("/notifications/stream")
@sse_route
def stream() -> t.Any:
    """The channel, replayed after the client's ``Last-Event-ID`` (or the
    ``lastEventId`` query parameter: ``0`` asks for the whole history)."""
    return sse.subscribe(CHANNEL, last_event_id=last_event_id())


def _error(message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), 400


@bp.post("/notify")
def notify() -> tuple[Response, int]:
    """Publish one notification; answer its id."""
    body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if not isinstance(body, dict):
        return _error("Send a JSON object with 'title' (and 'body', 'level').")
    title = body.get("title")
    text = body.get("body", "")
    level = body.get("level", "info")
    if not isinstance(title, str) or not title.strip():
        return _error("'title' must be a non-empty string.")
    if len(title) > MAX_TITLE:
        return _error(f"'title' must be at most {MAX_TITLE} characters, got {len(title)}.")
    if not isinstance(text, str) or len(text) > MAX_BODY:
        return _error(f"'body' must be a string of at most {MAX_BODY} characters.")
    if level not in LEVELS:
        return _error(f"'level' must be one of {', '.join(LEVELS)}, got {level!r}.")
    message = {"title": title.strip(), "body": text, "level": level, "at": time.time()}
    event_id = sse.publish(CHANNEL, message, event=EVENT)
    return jsonify({"id": event_id, **message}), 201
