"""Request helpers for stream views."""

from __future__ import annotations

from flask import request

__all__ = ["last_event_id"]


def last_event_id() -> str | None:
    """Return the id of the last event the client received, if it sent one.

    Browsers send it in the ``Last-Event-ID`` header when ``EventSource``
    reconnects; polyfills that cannot set headers send a ``lastEventId``
    query parameter instead. The header wins when both are present.

    :return: the id, or ``None`` when the client sent none (or an empty one).
    :raises RuntimeError: called outside a request.

    .. versionadded:: 0.1
    """
    value = request.headers.get("Last-Event-ID")
    if not value:
        value = request.args.get("lastEventId")
    return value or None
