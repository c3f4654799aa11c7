"""The streaming response: headers, the WSGI body, heartbeats and cleanup.

Headers are fixed once the body starts: set cookies and write the session in
the view before the stream starts, not in the generator.
"""

from __future__ import annotations

import contextlib
import socket
import typing as t

from flask import Response, current_app, got_request_exception, request, request_finished
from flask.globals import request_ctx
from werkzeug.datastructures import Headers

from .channels import Subscription
from .event import HEARTBEAT, OPEN, retry_line
from .extension import FROM_CONFIG, metrics_for, settings_for
from .helpers import last_event_id, parse_event_id
from .pump import Pump, Source

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = ["EventStream", "stream_response", "live_streams", "end_streams", "HEADERS"]

#: The headers of every stream response. ``Cache-Control`` forbids storing
#: and transforming (compressing proxies buffer); ``X-Accel-Buffering`` turns
#: off nginx's proxy buffering for this response, so nginx reads no further
#: ahead of a slow client than it can send (backpressure reaches the
#: generator). No hop-by-hop headers
#: (``Connection``, ``Transfer-Encoding``): WSGI forbids them and HTTP/2
#: rejects them; the server frames the body itself.
HEADERS: dict[str, str] = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store, no-transform",
    "X-Accel-Buffering": "no",
}

# Every open stream body of this process: a worker's streams must be
# reachable at shutdown whatever app they belong to. Streams add themselves
# when created and remove themselves when closed; set operations are atomic
# under the GIL, so no lock is needed.
_live: set[EventStream] = set()

# The body of the current request's stream, if it made one.
_ENVIRON_KEY = "flask_evstream.body"

#: Where ``sse_route`` notes when it called the view (``time.monotonic()``),
#: with metrics on: the start of the time to the first event.
STARTED_KEY = "flask_evstream.started"


def live_streams(app: Flask | None = None) -> int:
    """Return the number of open streams in this process.

    :param app: count only the streams of this app.

    .. versionadded:: 0.1
    """
    streams = _live.copy()
    if app is None:
        return len(streams)
    return sum(1 for s in streams if s.app is app)


def end_streams() -> int:
    """End every open stream of this process, for a graceful shutdown.

    Each stream writes what its generator already produced and then ends its
    response, so clients reconnect (to another worker). The generators are
    closed when the server closes the responses. Returns at once; safe to
    call from any thread or greenlet, but not from a signal handler (a
    greenlet or thread should call it, as the shutdown watcher of
    :mod:`flask_evstream.gunicorn_conf` does).

    :return: the number of streams told to end.

    .. versionadded:: 0.1
    """
    streams = _live.copy()
    for stream in streams:
        stream.end()
    return len(streams)


class EventStream:
    """The WSGI body of a stream response.

    Iterating it yields what its source (a :class:`~flask_evstream.pump.Pump`,
    or a :class:`~flask_evstream.channels.Subscription` read in place) has,
    all pending events in one chunk, or a heartbeat comment after
    ``heartbeat`` seconds of silence. The server calls :meth:`close` when the
    response ends, when the client went away (a write failed), or on error:
    that stops the generator and pops the request context kept for it.
    """

    __slots__ = ("_source", "app", "_opening", "_heartbeat", "_closed", "_ctx", "_socket")

    def __init__(
        self,
        source: Source,
        *,
        app: Flask,
        retry: int | None,
        heartbeat: float | None,
        keep_context: bool = True,
    ) -> None:
        self._source = source
        #: The app this stream belongs to.
        self.app = app
        self._opening: bytes | None = b"" if retry is None else retry_line(retry)
        self._heartbeat = heartbeat
        self._closed = False
        # Keep the request context (and its teardown) alive until close(),
        # as flask.stream_with_context does: pushing it once more here makes
        # the pop at the end of the view a no-op. close() runs in the same
        # greenlet or thread as the view, where the push happened.
        # A subscription read in place runs no user code after the view: its
        # context ends with the view, as for any response (less to keep).
        self._ctx = request_ctx._get_current_object() if keep_context else None  # type: ignore[attr-defined]
        if self._ctx is not None:
            self._ctx.push()
        request.environ[_ENVIRON_KEY] = self
        # The client's socket, where the server offers it, to drop a client
        # that stopped reading (a write to it may block for good).
        self._socket = request.environ.get("gunicorn.socket") or request.environ.get(
            "werkzeug.socket"
        )
        source.abort = self._abort
        _live.add(self)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        if self._opening is not None:
            # The first chunk leaves at once, so the headers do too: the
            # retry field and whatever is ready, or an empty comment.
            opening, self._opening = self._opening, None
            chunk = self._source.take(0)
            if chunk:
                return opening + chunk
            if chunk is None or opening:
                return opening or OPEN
            self.close()
            raise StopIteration
        chunk = self._source.take(self._heartbeat)
        if chunk is None:
            return HEARTBEAT
        if not chunk:
            # Ended: free everything now; the server's close() is then a no-op.
            self.close()
            raise StopIteration
        return chunk

    def _abort(self) -> None:
        self._source.end()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def end(self) -> None:
        """End this stream soon (see :func:`end_streams`)."""
        self._source.end()

    def close(self) -> None:
        """Stop the generator, pop the request context, forget the stream."""
        if self._closed:
            return
        self._closed = True
        try:
            self._source.close()
        finally:
            _live.discard(self)
            ctx, self._ctx = self._ctx, None
            if ctx is not None:
                ctx.pop(self._source.error)


def _close_unsent(sender: t.Any, response: Response | None = None, **extra: t.Any) -> None:
    """Close a stream whose body will never reach the server.

    An ``after_request`` function that raises or returns another response
    drops the body; nobody would close it, and its generator and request
    context would live forever. Runs (from Flask's ``request_finished`` and
    ``got_request_exception`` signals) in the view's context, before Flask
    pops it, so the pops stay in order.
    """
    body = request.environ.get(_ENVIRON_KEY)
    if isinstance(body, EventStream) and (response is None or response.response is not body):
        body.close()


request_finished.connect(_close_unsent, weak=False)
got_request_exception.connect(_close_unsent, weak=False)


def _first_id() -> int:
    last = parse_event_id(last_event_id())
    return 1 if last is None else last + 1


def stream_response(
    iterable: t.Iterable[t.Any],
    *,
    retry: int | None,
    ids: bool,
    heartbeat: t.Any,
    headers: t.Mapping[str, str] | None,
) -> Response:
    """Start streaming ``iterable`` and return the response for it.

    Called in the view, inside the request. The iterable starts at once in
    its own greenlet or thread; this waits up to ``EVSTREAM_START_WAIT``
    for its first event so that an error raised before it (``abort(403)``)
    becomes an ordinary error response.

    :param heartbeat: seconds, ``None`` for none, or
        :data:`~flask_evstream.extension.FROM_CONFIG`.
    :param retry: ms, or ``None`` for the app's ``EVSTREAM_RETRY``.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = settings_for(app)
    all_headers = Headers(HEADERS)
    if headers:
        for name, value in headers.items():
            all_headers.set(name, value)
    if request.method == "HEAD":
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
        return Response(iter(()), headers=all_headers)
    if retry is None:
        retry = settings.retry
    if heartbeat is FROM_CONFIG:
        heartbeat = settings.heartbeat
    source: Source
    if isinstance(iterable, Subscription):
        # Read in this greenlet: no pump, no extra greenlet per client.
        # Registration and replay happen here, so errors are responses.
        source = iterable
        source.wait_started(settings.start_wait)
    else:
        pump = Pump(
            iterable,
            logger=app.logger,
            max_buffer=settings.max_buffer,
            first_id=_first_id() if ids else None,
        )
        pump.start()
        if settings.start_wait:
            pump.wait_started(settings.start_wait)
        error = pump.commit()
        if error is not None:
            pump.close()
            raise error
        source = pump
    keep_context = not isinstance(source, Subscription)
    metrics = metrics_for(app)
    body: EventStream
    if metrics is None:
        body = EventStream(
            source, app=app, retry=retry, heartbeat=heartbeat, keep_context=keep_context
        )
    else:
        body = metrics.stream(
            source, app=app, retry=retry, heartbeat=heartbeat, keep_context=keep_context
        )
    return Response(body, headers=all_headers, direct_passthrough=True)
