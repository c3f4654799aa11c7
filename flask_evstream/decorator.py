"""The :func:`sse_route` decorator."""

from __future__ import annotations

import functools
import inspect
import re
import time
import typing as t

from flask import current_app, request

from .extension import FROM_CONFIG, check_heartbeat, check_retry, metrics_for
from .response import STARTED_KEY, stream_response

__all__ = ["sse_route"]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


# Hop-by-hop headers (RFC 9110 7.6.1) and framing that the server owns.
_FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-type",
        "content-encoding",
    }
)

# RFC 9110 5.6.2 token, and field values of visible characters, spaces and tabs.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")


def _check_headers(headers: t.Any) -> dict[str, str] | None:
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, t.Mapping) else headers
    checked: dict[str, str] = {}
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(
                "sse_route headers must be a mapping or a list of (name, value) pairs,"
                f" got {headers!r}"
            )
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"sse_route headers must have str names and values, got {name!r}: {value!r}"
            )
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"sse_route header name {name!r} is not a valid HTTP field name")
        if not _VALUE.fullmatch(value):
            raise ValueError(
                f"sse_route header {name!r} must hold visible ASCII characters, spaces"
                f" and tabs only, got {value!r}"
            )
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ValueError(
                f"sse_route headers must not set {name!r}: hop-by-hop and framing"
                " headers belong to the server, and the content type is"
                " text/event-stream"
            )
        checked[name] = value
    return checked


def _is_stream(rv: t.Any) -> bool:
    """Whether a view's return value is something to stream.

    Responses, ``(body, status)`` tuples, ``str``, ``bytes``, ``dict`` and
    ``None`` go to Flask as they are (a 204 tells ``EventSource`` to stop
    reconnecting; a 401 asks for credentials).
    """
    if isinstance(rv, (tuple, str, bytes, bytearray, dict)) or rv is None:
        return False
    if isinstance(rv, current_app.response_class) or callable(rv):
        return False
    return hasattr(rv, "__iter__") or hasattr(rv, "__next__")


@t.overload
def sse_route(func: F, /) -> F: ...


@t.overload
def sse_route(
    *,
    retry: int | None = None,
    ids: bool = False,
    heartbeat: float | None = FROM_CONFIG,
    headers: t.Mapping[str, str] | t.Iterable[tuple[str, str]] | None = None,
    resumable: bool = False,
) -> t.Callable[[F], F]: ...


def sse_route(
    func: t.Callable[..., t.Any] | None = None,
    /,
    *,
    retry: int | None = None,
    ids: bool = False,
    heartbeat: float | None = FROM_CONFIG,
    headers: t.Mapping[str, str] | t.Iterable[tuple[str, str]] | None = None,
    resumable: bool = False,
) -> t.Any:
    """Turn a view that returns a generator (or any iterable) into a
    ``text/event-stream`` response. Stack it under ``@app.route``::

        @app.get("/clock")
        @sse_route(retry=3000)
        def clock():
            while True:
                yield {"now": time.time()}
                time.sleep(1)

    Each item the view yields is sent as one event: an
    :class:`~flask_evstream.Event` as it is, a :class:`str` as its data, any
    other value as compact JSON data. A view that returns a response or a
    ``(body, status)`` tuple instead (say ``("", 204)`` to stop the client
    reconnecting) is passed to Flask untouched.

    The generator runs in the request context for its whole life
    (``request``, ``session``, ``g``, ``current_app``), in its own greenlet
    (gevent) or thread, so that heartbeats flow and a closed connection is
    noticed while it blocks. Headers are sent before the generator's first
    event or after ``EVSTREAM_START_WAIT``, whichever comes first; an
    exception raised before then (``abort(403)``) becomes the response.
    Later, an exception is logged with ``app.logger`` and ends the stream.

    :param retry: the reconnection delay (ms) the stream opens with; default
        ``EVSTREAM_RETRY`` (none).
    :param ids: number the events that have no id 1, 2, 3...; a request whose
        ``Last-Event-ID`` is such a number ``n`` numbers from ``n + 1``, so
        the generator resumes with ``last_event_id()``.
    :param heartbeat: seconds of silence before a keep-alive comment is
        written; ``None`` or ``0`` for none; default ``EVSTREAM_HEARTBEAT``.
    :param headers: extra response headers (not hop-by-hop, not
        ``Content-Type`` or ``Content-Length``).
    :param resumable: run the generator detached from the connection, its
        events in a log in the app's broker that any worker can resume from
        (see :doc:`/resumable`); needs the :class:`~flask_evstream.EvStream`
        extension. Ids are ``<stream id>.<position>`` (``ids`` is implied);
        the response's ``Content-Location`` is the resume URL.
    :raises TypeError, ValueError: an argument is not allowed (at decoration
        time, not per request).

    .. versionadded:: 0.1
    """
    checked_retry = check_retry("sse_route retry", retry)
    if not isinstance(ids, bool):
        raise TypeError(f"sse_route ids must be a bool, got {ids!r}")
    if not isinstance(resumable, bool):
        raise TypeError(f"sse_route resumable must be a bool, got {resumable!r}")
    checked_heartbeat = (
        heartbeat if heartbeat is FROM_CONFIG else check_heartbeat("sse_route heartbeat", heartbeat)
    )
    checked_headers = _check_headers(headers)

    def decorator(view: F) -> F:
        if not callable(view):
            raise TypeError(f"sse_route decorates a view function, got {view!r}")
        if inspect.iscoroutinefunction(view) or inspect.isasyncgenfunction(view):
            raise TypeError(
                f"sse_route needs a sync view (a generator function or one that"
                f" returns an iterable); {view.__qualname__} is async"
            )

        @functools.wraps(view)
        def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if metrics_for(current_app) is not None:
                # For the time to the first event (flask_evstream.metrics).
                request.environ[STARTED_KEY] = time.monotonic()
            if resumable:
                return resumable_route(args, kwargs)
            rv = view(*args, **kwargs)
            if not _is_stream(rv):
                return rv
            return stream_response(
                rv,
                retry=checked_retry,
                ids=ids,
                heartbeat=checked_heartbeat,
                headers=checked_headers,
            )

        def resumable_route(args: t.Any, kwargs: t.Any) -> t.Any:
            from . import resumable as rs

            options = {
                "retry": checked_retry,
                "heartbeat": checked_heartbeat,
                "headers": checked_headers,
            }
            resumed = rs.resume_if_asked(**options)
            if resumed is not None:
                return resumed
            sid = rs.begin()
            rv = view(*args, **kwargs)
            if not _is_stream(rv):
                return rv
            return rs.start(rv, sid, **options)

        return t.cast(F, wrapper)

    if func is not None:
        return decorator(func)
    return decorator
