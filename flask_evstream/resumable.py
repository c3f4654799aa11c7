"""Resumable streams: an answer that outlives its connection.

``@sse_route(resumable=True)`` runs the view's generator detached from the
request (a :class:`Producer`). Each event it yields is appended to the
stream's *log*, a channel of the app's log broker (the app's broker URL with
the key prefix ``<EVSTREAM_REDIS_PREFIX>:rs``, a history of
``EVSTREAM_RESUME_MAX_EVENTS`` and a TTL of ``EVSTREAM_RESUME_TTL``), and
every response, the first one included, is a :class:`LogReader` of that log:
it replays what is there after the client's position, then follows it live,
on any worker or host that shares the broker, until the stream's ending.

**The log.** Channel ``rs:{<stream id>}`` (the braces make it one group on a
Redis Cluster). Besides the generator's events it holds entries that
readers do not show: ``evstream-start`` (first, so the log exists at once),
``evstream-lease`` (the producer is alive: written after
:data:`LEASE_SECONDS` without an event) and ``evstream-done`` (the generator
returned). Other endings are written as ``evstream-end`` with data
``{"reason": ...}``, which readers send as the last event.

**Ids.** ``<stream id>.<position>``: the stream id (:func:`new_stream_id`,
144 random bits) and the broker id of the event in the log.

**Control.** ``sse.cancel(stream_id)`` (and ``DELETE`` on the resume URL)
writes ``evstream-cancel`` to the channel ``rs:{<stream id>}:ctl``; the
producer's watcher, which reads it wherever the producer runs, stops the
generator (under gevent at once, where it blocks; under threads at its next
item).
"""

from __future__ import annotations

import collections
import contextvars
import json
import logging
import re
import secrets
import time
import typing as t

from flask import Flask, Response, abort, current_app, g, request, url_for
from flask.ctx import RequestContext
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException

from .brokers.base import Broker, BrokerUnavailable
from .channels import GAP_EVENT, Subscription
from .concurrency import Flag, new_event, spawn, uses_gevent
from .event import Event, _data_text
from .extension import FROM_CONFIG
from .helpers import last_event_id, parse_event_id
from .response import stream_response

__all__ = [
    "END_EVENT",
    "LEASE_SECONDS",
    "LogReader",
    "Producer",
    "close_producers",
    "new_stream_id",
    "parse_resume_id",
    "producers",
]

logger = logging.getLogger("flask_evstream.resumable")

#: The event type of a stream's last event when it did not end ``done``;
#: its data is ``{"reason": "cancelled" | "failed" | "lost" | "expired"}``.
END_EVENT = "evstream-end"

#: Seconds without an event after which a producer writes a lease entry.
LEASE_SECONDS = 2.0

#: Seconds of silence after which a reader takes the producer for dead
#: (its process died) and ends the stream ``lost``.
LOST_AFTER = 4 * LEASE_SECONDS

#: Events pending for the log before the generator waits for the writer;
#: also the most one write sends.
OUTBOX_LIMIT = 500

_START, _LEASE, _DONE, _CANCEL = (
    "evstream-start",
    "evstream-lease",
    "evstream-done",
    "evstream-cancel",
)
_HIDDEN = frozenset({_START, _LEASE, GAP_EVENT})

_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")

# The producers running in this process.
_producers: set[Producer] = set()


def new_stream_id() -> str:
    """A new stream id: 144 random bits, 24 URL-safe characters."""
    return secrets.token_urlsafe(18)


def check_stream_id(text: t.Any) -> str | None:
    """``text`` if it looks like a stream id, else ``None``."""
    if isinstance(text, str) and _STREAM_ID.fullmatch(text):
        return text
    return None


def parse_resume_id(text: str | None) -> tuple[str, int] | None:
    """The stream id and position of a resumable stream's event id
    (``<stream id>.<position>``), or ``None`` for anything else."""
    if not text:
        return None
    sid, dot, position = text.rpartition(".")
    number = parse_event_id(position)
    if not dot or check_stream_id(sid) is None or number is None:
        return None
    return sid, number


def log_channel(sid: str) -> str:
    return f"rs:{{{sid}}}"


def control_channel(sid: str) -> str:
    return f"rs:{{{sid}}}:ctl"


def producers() -> int:
    """Return the number of detached producers running in this process.

    .. versionadded:: 0.2
    """
    return len(_producers)


def close_producers(timeout: float) -> int:
    """Wait up to ``timeout`` seconds for this process's producers to end,
    then close those still running: their ``finally`` runs and their streams
    end ``lost`` (readers elsewhere learn it). For a worker's exit.

    :return: the number closed.
    """
    deadline = time.monotonic() + timeout
    while _producers and time.monotonic() < deadline:
        time.sleep(0.05)
    left = list(_producers)
    for producer in left:
        producer.stop("lost")
    for producer in left:
        producer.wait(5)
    return len(left)


class _Stopped(BaseException):
    """Raised in a producer's greenlet to stop its generator."""


class Producer:
    """Run a resumable route's generator to its end, appending to its log.

    Made in the view, inside the request: it keeps a request context of its
    own (the same ``request`` and ``session``, a copy of ``g``) until the
    generator ends, whatever happens to the connection.
    """

    def __init__(
        self,
        iterable: t.Iterable[t.Any],
        *,
        sid: str,
        broker: Broker,
        max_events: int,
        max_bytes: int,
        max_age: float,
        app_logger: logging.Logger,
    ) -> None:
        self.sid = sid
        self._iterable = iterable
        self._broker = broker
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._logger = app_logger
        self._gevent = uses_gevent()
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        request.get_data()  # the body, read now: the connection may go
        self._ctx = RequestContext(
            app,
            request.environ,
            request=request._get_current_object(),  # type: ignore[attr-defined]
            session=request_ctx.session,
        )
        self._g = dict(g.__dict__)
        self._reason: str | None = None  # why it was told to stop
        self._entries = 1  # in the log: the start, events and leases
        self._ending = False  # the generator is done; the ending is being written
        self._started = new_event()  # the first event is in the log, or it ended
        self._finished = new_event()
        self._watching = new_event()
        self._last_write = time.monotonic()
        self._outbox: collections.deque[tuple[str, str | None]] = collections.deque()
        self._ready = Flag()  # the writer waits: events pending, or the end
        self._space = Flag()  # the generator waits: the writer took some
        self._closing = False  # the generator is done: the writer ends
        self._write_failed = False
        self._flushed = new_event()
        self._worker: t.Any = None
        #: The exception the generator raised before its first event, if any.
        self.early_error: BaseException | None = None
        self.produced = False

    # -- running -------------------------------------------------------------

    def start(self) -> None:
        """Write the log's first entry and start the watcher and the generator."""
        self._write(Event({"t": time.time()}, event=_START))
        _producers.add(self)
        spawn(contextvars.Context().run, self._watch, name=f"evstream-watch-{self.sid[:6]}")
        self._watching.wait(5)
        spawn(self._flush, name=f"evstream-log-{self.sid[:6]}")
        self._worker = spawn(
            contextvars.Context().run, self._run, name=f"evstream-rs-{self.sid[:6]}"
        )

    def wait_started(self, timeout: float) -> None:
        self._started.wait(timeout)

    def wait(self, timeout: float) -> bool:
        return bool(self._finished.wait(timeout))

    def stop(self, reason: str) -> None:
        """Stop the generator (from any greenlet or thread); its stream ends
        with ``reason``."""
        if self._reason is not None or self._finished.is_set():
            return
        self._reason = reason
        worker = self._worker
        if self._gevent and worker is not None and not worker.dead and not self._ending:
            worker.kill(_Stopped, block=False)

    def _write(self, event: Event) -> None:
        data = None if event.data is None else _data_text(event.data)
        self._broker.publish(log_channel(self.sid), data or "", event=event.event, id=None)
        self._last_write = time.monotonic()

    def _run(self) -> None:
        ctx = self._ctx
        ctx.push()
        g.__dict__.update(self._g)
        reason = "done"
        iterator = None
        size = 0
        try:
            iterator = iter(self._iterable)
            for item in iterator:
                if self._reason is not None:
                    break
                if isinstance(item, str):
                    text, kind = item, None
                else:
                    event = item if isinstance(item, Event) else Event(item)
                    if event.data is None:
                        continue  # comments and retry fields are not logged
                    text, kind = _data_text(event.data), event.event
                self._entries += 1
                size += len(text)
                # (two entries stay free: the ending, and a lost verdict)
                if self._entries > self._max_events - 2 or size > self._max_bytes:
                    self._logger.error(
                        "Resumable stream %s went past EVSTREAM_RESUME_MAX_EVENTS (%d events,"
                        " %d bytes); it ends failed",
                        self.sid,
                        self._max_events,
                        self._max_bytes,
                    )
                    reason = "failed"
                    break
                self._queue(text, kind)
                self.produced = True
        except _Stopped:
            pass
        except Exception as e:
            reason = "failed"
            if not self.produced and isinstance(e, HTTPException):
                self.early_error = e
            elif isinstance(e, HTTPException):
                self._logger.info("Resumable stream %s raised %s; it ends failed", self.sid, e)
            else:
                self._logger.error(
                    "Exception in resumable stream %s; it ends failed", self.sid, exc_info=True
                )
        finally:
            self._ending = True  # stop() no longer interrupts: the ending is written
            try:
                self._close(iterator)
            finally:
                try:
                    for _ in range(3):  # a stop() that came as the generator ended
                        try:
                            self._end(reason)
                            break
                        except _Stopped:
                            continue
                finally:
                    _producers.discard(self)
                    self._finished.set()
                    self._started.set()
                    ctx.pop()

    def _end(self, reason: str) -> None:
        """Let the writer flush, then write the ending."""
        self._closing = True
        self._ready.set()
        self._flushed.wait(30)
        if self._write_failed and self._reason is None:
            reason = "failed"
        if self._reason is not None:
            reason = self._reason
        try:
            if reason == "done":
                self._write(Event("", event=_DONE))
            else:
                self._write(Event({"reason": reason}, event=END_EVENT))
        except BrokerUnavailable as e:
            logger.warning(
                "Resumable stream %s ended %s but the broker is unreachable (%s);"
                " its readers will take it for lost",
                self.sid,
                reason,
                e,
            )

    def _queue(self, text: str, kind: str | None) -> None:
        """Hand an event to the writer; wait while too many are pending (a
        slow broker holds back the generator, not memory)."""
        outbox = self._outbox
        outbox.append((text, kind))
        self._ready.notify()
        if len(outbox) >= OUTBOX_LIMIT:
            self._space.wait(
                lambda: (
                    len(outbox) < OUTBOX_LIMIT or self._write_failed or self._reason is not None
                ),
                None,
            )
        if self._write_failed:
            raise BrokerUnavailable(f"resumable stream {self.sid}: the log cannot be written")

    def _flush(self) -> None:
        """The writer: append what the generator produced to the log, all
        that is pending in one go (one round trip with Redis)."""
        outbox = self._outbox
        channel = log_channel(self.sid)
        try:
            while True:
                self._ready.wait(lambda: bool(outbox) or self._closing, None)
                if not outbox:
                    if self._closing:
                        return
                    continue
                batch = [outbox.popleft() for _ in range(min(len(outbox), OUTBOX_LIMIT))]
                try:
                    self._broker.publish_many(channel, batch)
                except Exception as e:  # unreachable, or a foreign key: the log is lost
                    self._logger.error(
                        "Resumable stream %s cannot write its log (%s); it ends failed",
                        self.sid,
                        e,
                    )
                    self._write_failed = True
                    outbox.clear()
                    self.stop("failed")
                self._last_write = time.monotonic()
                self._started.set()
                self._space.notify()
        finally:
            self._flushed.set()

    def _close(self, iterator: t.Any) -> None:
        for obj in (iterator, self._iterable):
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except _Stopped:
                    pass
                except Exception:
                    self._logger.error("Exception while closing resumable stream", exc_info=True)
                return

    def _watch(self) -> None:
        """Read the control channel; write leases; enforce the age cap."""
        sub = Subscription(
            self._broker, (control_channel(self.sid),), after=None, last_event_id=None, queue_size=8
        )
        try:
            sub.wait_started(0)
        finally:
            self._watching.set()
        deadline = time.monotonic() + self._max_age
        try:
            while not self._finished.is_set():
                if not sub._fill(LEASE_SECONDS / 2):
                    break
                while sub._pending:
                    if sub._pending.popleft().event == _CANCEL:
                        self.stop("cancelled")
                now = time.monotonic()
                if now >= deadline:
                    self.stop("expired")
                elif now - self._last_write >= LEASE_SECONDS and not self._finished.is_set():
                    try:
                        if self._entries < self._max_events - 2:  # room left in the log
                            self._entries += 1
                            self._write(Event("", event=_LEASE))
                    except BrokerUnavailable:
                        pass
        finally:
            sub.close()


def cancel(broker: Broker, sid: str) -> bool:
    """Tell the producer of stream ``sid``, wherever it runs, to stop.

    :return: whether the stream's log exists (else nothing was sent).
    """
    if not broker.exists(log_channel(sid)):
        return False
    broker.publish(control_channel(sid), "", event=_CANCEL, id=None)
    return True


class LogReader(Subscription):
    """A reader of a stream's log: replay after a position, then live, to
    the stream's ending; events get ids ``<stream id>.<position>``.

    A stream returned from a view: the response reads it in place.
    """

    __slots__ = ("_sid", "_ended", "_heard", "_lost_after")

    def __init__(
        self,
        broker: Broker,
        sid: str,
        *,
        after: int,
        queue_size: int,
        max_buffer: int,
        lost_after: float = LOST_AFTER,
    ) -> None:
        super().__init__(
            broker,
            (log_channel(sid),),
            after=after,
            last_event_id=None,
            queue_size=queue_size,
            max_buffer=max_buffer,
        )
        self._sid = sid
        self._ended = False
        self._heard = time.monotonic()
        self._lost_after = lost_after

    def __next__(self) -> Event:
        raise TypeError("a LogReader is read by its stream (take), not iterated")

    def take(self, timeout: float | None) -> bytes | None:
        pending = self._pending
        if not pending:
            if self._ended:
                self.close()
                return b""
            wait = max(0.0, self._heard + self._lost_after - time.monotonic())
            if timeout is not None and timeout < wait:
                if not self._fill(timeout):
                    return b""
                if not pending:
                    return None
            else:
                if not self._fill(wait):
                    return b""
                if not pending:
                    if time.monotonic() < self._heard + self._lost_after:
                        # Woken for events the replay had sent: not silence.
                        return self.take(timeout)
                    self._lost()
        self._heard = time.monotonic()
        parts = []
        size = 0
        limit = self._max_buffer
        while pending and size < limit:
            event = pending.popleft()
            kind = event.event
            if kind in _HIDDEN:
                continue
            if kind == _DONE:
                self._ended = True
                break
            if kind == END_EVENT:
                parts.append(Event(event.data, event=END_EVENT).encode())
                self._ended = True
                break
            wire = self._rename(event)
            parts.append(wire)
            size += len(wire)
        if self._ended:
            pending.clear()
        if not parts:
            return self.take(timeout) if pending or self._ended else None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _rename(self, event: Event) -> bytes:
        """The event's bytes with the id ``<stream id>.<position>``: the
        broker's event has ``id: <position>`` as a line of its own, after
        the ``event`` line (whose value holds no line end)."""
        wire = event.encode()
        line = b"id: " + str(event.id).encode() + b"\n"
        named = b"id: " + self._sid.encode() + b"." + line[4:]
        if wire.startswith(line):
            return named + wire[len(line) :]
        at = wire.find(b"\n" + line)
        if at < 0:  # not from a broker: encode it again
            return Event(event.data, event=event.event, id=f"{self._sid}.{event.id}").encode()
        return wire[: at + 1] + named + wire[at + 1 + len(line) :]

    def _lost(self) -> None:
        """Nothing for ``lost_after``: the producer died. Record it in the log
        for the readers to come, and end this one with it."""
        data = json.dumps({"reason": "lost"}, separators=(",", ":"))
        try:
            self._broker.publish(log_channel(self._sid), data, event=END_EVENT, id=None)
        except BrokerUnavailable:
            self._pending.append(Event(data, event=END_EVENT))
        # The recorded ending arrives live; wait for it briefly, else say it here.
        if not self._pending:
            self._fill(1.0)
        if not self._pending:
            self._pending.append(Event(data, event=END_EVENT))


# -- responses and routes -----------------------------------------------------


def _state() -> t.Any:
    state = current_app.extensions.get("evstream")
    if state is None:
        raise RuntimeError(
            "sse_route(resumable=True) needs the EvStream extension on the app"
            " (EvStream(app) or init_app(app)): it keeps the logs in its broker"
        )
    return state


def stream_id() -> str | None:
    """The id of the resumable stream the current request started (in the
    view and its generator), for tying it to a user in the authorize hook.

    .. versionadded:: 0.2
    """
    value = g.get("evstream_stream_id")
    return value if isinstance(value, str) else None


def _authorize(state: t.Any, sid: str) -> None:
    hook = state.extension._authorize
    if hook is not None and not hook(f"stream:{sid}"):
        abort(403)


def reader_response(
    state: t.Any,
    sid: str,
    after: int,
    *,
    retry: int | None = None,
    heartbeat: t.Any = FROM_CONFIG,
    headers: t.Mapping[str, str] | None = None,
) -> Response:
    """The response that reads stream ``sid``'s log after ``after``."""
    settings = state.settings
    reader = LogReader(
        state.logs(),
        sid,
        after=after,
        # Never cut off: a reader is at most the whole log behind, and the
        # log's events are shared, not copied, by its readers.
        queue_size=settings.resume_max_events,
        max_buffer=settings.max_buffer,
    )
    all_headers = dict(headers or {})
    all_headers["Content-Location"] = url_for("evstream_stream", sid=sid)
    all_headers["Access-Control-Expose-Headers"] = "Content-Location"
    return stream_response(reader, retry=retry, ids=False, heartbeat=heartbeat, headers=all_headers)


def resume_if_asked(**options: t.Any) -> Response | None:
    """For a GET to a resumable route: the response that resumes the stream
    the client's ``Last-Event-ID`` names, if it is one of ours and known."""
    if request.method != "GET":
        return None
    parsed = parse_resume_id(last_event_id())
    if parsed is None:
        return None
    state = _state()
    sid, after = parsed
    logs = state.logs()
    try:
        if not logs.exists(log_channel(sid)):
            return None
    except BrokerUnavailable:
        abort(503)
    _authorize(state, sid)
    if _done_after(logs, sid, after):
        return current_app.response_class(status=204)
    return reader_response(state, sid, after, **options)


def begin() -> str:
    """Make the id of the stream this request starts (before the view runs)."""
    _state()
    sid = new_stream_id()
    g.evstream_stream_id = sid
    return sid


def start(iterable: t.Iterable[t.Any], sid: str, **options: t.Any) -> Response:
    """Start ``iterable`` as the detached producer of stream ``sid`` and
    return the response that reads its log from the start."""
    state = _state()
    settings = state.settings
    producer = Producer(
        iterable,
        sid=sid,
        broker=state.logs(),
        max_events=settings.resume_max_events,
        max_bytes=settings.resume_max_bytes,
        max_age=settings.resume_max_age,
        app_logger=current_app.logger,
    )
    try:
        producer.start()
    except BrokerUnavailable:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
        abort(503)
    producer.wait_started(settings.start_wait)
    if producer.early_error is not None:
        raise producer.early_error
    return reader_response(state, sid, 0, **options)


def stream_view(sid: str) -> t.Any:
    """``GET`` (resume) and ``DELETE`` (stop) on ``<prefix>/streams/<sid>``."""
    state = _state()
    if check_stream_id(sid) is None:
        abort(404)
    _authorize(state, sid)
    logs = state.logs()
    try:
        if not logs.exists(log_channel(sid)):
            abort(404)
        if request.method == "DELETE":
            cancel(logs, sid)
            return "", 202
    except BrokerUnavailable:
        abort(503)
    parsed = parse_resume_id(last_event_id())
    after = parsed[1] if parsed is not None and parsed[0] == sid else 0
    if after and _done_after(logs, sid, after):
        return "", 204  # nothing more, ever: EventSource and evstream.js stop
    return reader_response(state, sid, after)


def _done_after(logs: Broker, sid: str, after: int) -> bool:
    """Whether stream ``sid`` ended ``done`` with nothing to show after ``after``."""
    try:
        events, _ = logs.history([log_channel(sid)], after)
    except BrokerUnavailable:
        return False
    kinds = [event.event for _, event in events]
    return _DONE in kinds and all(k in _HIDDEN or k == _DONE for k in kinds)


def script_view() -> t.Any:
    """``GET <prefix>/evstream.js``: the browser client, versioned with the package."""
    from importlib.resources import files

    from . import __version__

    source = files("flask_evstream").joinpath("static/evstream.js").read_bytes()
    response = current_app.response_class(source, mimetype="text/javascript")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["X-Evstream-Version"] = __version__
    response.set_etag(f"evstream-{__version__}-{len(source)}")
    return response.make_conditional(request)
