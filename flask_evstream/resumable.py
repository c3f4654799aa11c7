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
Redis Cluster). The generator's events are encoded once, by the producer,
and logged in runs: one ``evstream-data`` entry holds the events that were
pending when the writer wrote (one when the generator is paced like a model,
hundreds when it is fast), at most ``EVSTREAM_MAX_BUFFER`` bytes of them,
as the text ``<first> <last>\n<their bytes on the wire>``; readers send
those bytes as they are. The log also holds entries that readers do not
show: ``evstream-start`` (first, so the log exists at once),
``evstream-lease`` (the producer is alive: written after
:data:`LEASE_SECONDS` without an event) and ``evstream-done`` (the generator
returned; its data is the last position). Other endings are written as
``evstream-end`` with data ``{"reason": ...}``, which readers send as the
last event.

**Ids.** ``<stream id>.<position>``: the stream id (:func:`new_stream_id`,
144 random bits) and the event's position in the stream, 1 for the first.
Each event starts with its ``id`` line, so a resume in the middle of a run
finds its place by the id.

**Control.** ``sse.cancel(stream_id)`` (and ``DELETE`` on the resume URL)
writes ``evstream-cancel`` to the channel ``rs:{<stream id>}:ctl``; the
producer's watcher, which reads it wherever the producer runs, stops the
generator (under gevent at once, where it blocks; under threads at its next
item).
"""

from __future__ import annotations

import collections
import contextvars
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
from .channels import Subscription
from .concurrency import Flag, new_event, spawn, uses_gevent
from .event import Event, _data_text, encode_data, encode_item, type_and_data
from .extension import FROM_CONFIG
from .helpers import last_event_id, parse_event_id
from .jsondata import dumps
from .response import stream_response

if t.TYPE_CHECKING:
    from .metrics import Metrics

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

#: Bytes of events pending for the log before the generator waits for the
#: writer; the writer sends all that is pending in one write. A fast
#: generator fills it while a write is in flight, so this is what one round
#: trip to Redis carries (about 2,500 OpenAI chunks).
OUTBOX_BYTES = 512 * 1024

_START, _LEASE, _DONE, _CANCEL, _DATA = (
    "evstream-start",
    "evstream-lease",
    "evstream-done",
    "evstream-cancel",
    "evstream-data",
)

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


def log_entry(first: int, last: int, wire: bytes) -> str:
    """The data of an ``evstream-data`` entry: events ``first`` to ``last``
    (positions), encoded with their ids."""
    return f"{first} {last}\n" + wire.decode()


def _event_wire(item: t.Any) -> bytes | None:
    """The bytes a resumable stream logs for an item, without its id;
    ``None`` for what is not logged (comments, retry fields, events without
    data). An id or retry of the item's own is dropped: the log names the
    ids."""
    if isinstance(item, Event):
        if item.data is None:
            return None
        if item.id is not None or item.retry is not None or item.comment is not None:
            return type_and_data(item)  # its data as encoded when it was made
        return item.encode()
    return encode_item(item)


def _end_event(reason: str) -> Event:
    """The last event of a stream that did not end ``done``. Its JSON is the
    library's own whatever the app's JSON provider: it is the protocol's
    (``evstream.js`` reads it), not the app's data."""
    return Event(dumps({"reason": reason}), event=END_EVENT)


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
        max_buffer: int,
        app_logger: logging.Logger,
        metrics: Metrics | None = None,
    ) -> None:
        self.sid = sid
        self._max_buffer = max_buffer
        self._iterable = iterable
        self._broker = broker
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._logger = app_logger
        self._metrics = metrics
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
        self._outbox: collections.deque[bytes] = collections.deque()
        self._taken_bytes = 0  # by the writer (written by it alone)
        self._written = 0  # the writer's last position, once it has ended
        self._ready = Flag()  # the writer waits: events pending, or the end
        self._space = Flag()  # the generator waits: the writer took some
        self._closing = False  # the generator is done: the writer ends
        self._write_failed = False
        self._flushed = new_event()
        self._worker: t.Any = None
        # Readers in this process fed by the producer itself (the response
        # that started the stream): no round trip through the broker's reader.
        self._local: list[LogReader] = []
        #: The exception the generator raised before its first event, if any.
        self.early_error: BaseException | None = None
        self.produced = False

    # -- running -------------------------------------------------------------

    def start(self) -> None:
        """Write the log's first entry and start the watcher and the generator."""
        self._write(Event(dumps({"t": time.time()}), event=_START))
        _producers.add(self)
        if self._metrics is not None:
            self._metrics.producers.inc()
        spawn(contextvars.Context().run, self._watch, name=f"evstream-watch-{self.sid[:6]}")
        self._watching.wait(5)
        spawn(self._flush, name=f"evstream-log-{self.sid[:6]}")
        self._worker = spawn(
            contextvars.Context().run, self._run, name=f"evstream-rs-{self.sid[:6]}"
        )

    def attach(self, reader: LogReader) -> None:
        """Feed ``reader`` (made before :meth:`start`, from position 0) each
        run once it is in the log, and the ending."""
        self._local.append(reader)
        reader._producer = self

    def detach(self, reader: LogReader) -> None:
        if reader in self._local:
            self._local.remove(reader)

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
            prefix = b"id: " + self.sid.encode() + b"."
            position = 0
            queued = 0  # bytes handed to the writer
            outbox = self._outbox
            ready = self._ready
            limit_events = self._max_events - 2  # room for the ending and a lost verdict
            for item in iterator:
                if self._reason is not None:
                    break
                if type(item) is str:
                    wire = encode_data(item)
                else:
                    wire = _event_wire(item)  # type: ignore[assignment]
                    if wire is None:
                        continue
                self._entries += 1
                size += len(wire)
                if self._entries > limit_events or size > self._max_bytes:
                    self._logger.error(
                        "Resumable stream %s went past EVSTREAM_RESUME_MAX_EVENTS (%d events,"
                        " %d bytes); it ends failed",
                        self.sid,
                        self._max_events,
                        self._max_bytes,
                    )
                    reason = "failed"
                    break
                position += 1
                line = prefix + b"%d\n" % position + wire
                outbox.append(line)
                queued += len(line)
                ready.notify()
                if queued - self._taken_bytes >= OUTBOX_BYTES:
                    self._wait_for_space(queued)
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
                    if self._metrics is not None:
                        self._metrics.producers.dec()
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
                self._write(Event(str(self._written), event=_DONE))
            else:
                self._write(_end_event(reason))
        except Exception as e:  # unreachable, or a foreign key over the log
            if reason == "done":  # not in the log: readers elsewhere will see lost
                reason = "lost"
            logger.warning(
                "Resumable stream %s ended %s but its ending cannot be written (%s);"
                " its readers elsewhere will take it for lost",
                self.sid,
                reason,
                e,
            )
        finally:
            for reader in list(self._local):
                reader._feed_end(reason)

    def _wait_for_space(self, queued: int) -> None:
        """Wait while too much is pending for the log (``queued`` bytes handed
        to the writer in all): a slow broker holds back the generator, not
        memory."""
        self._space.wait(
            lambda: (
                queued - self._taken_bytes < OUTBOX_BYTES
                or self._write_failed
                or self._reason is not None
            ),
            None,
        )
        if self._write_failed:
            raise BrokerUnavailable(f"resumable stream {self.sid}: the log cannot be written")

    def _flush(self) -> None:
        """The writer: append what the generator produced to the log, all
        that is pending in one go (one round trip with Redis), in runs of at
        most ``max_buffer`` bytes (one entry each)."""
        outbox = self._outbox
        channel = log_channel(self.sid)
        limit = self._max_buffer
        written = 0  # the position of the last event handed to the broker
        try:
            while True:
                self._ready.wait(lambda: bool(outbox) or self._closing, None)
                if not outbox:
                    if self._closing:
                        return
                    continue
                entries: list[tuple[str, str | None]] = []
                run: list[bytes] = []
                size = 0
                # All that is pending (about OUTBOX_BYTES at most); popleft,
                # as the generator may append meanwhile (threads).
                taken = [outbox.popleft() for _ in range(len(outbox))]
                self._taken_bytes += sum(map(len, taken))
                self._space.notify()  # the generator goes on while this write is in flight
                if self._write_failed:
                    continue  # the log is lost already: nothing more is written
                runs: list[tuple[bytes, int]] = []  # the bytes and events of each
                for wire in taken:
                    if run and size + len(wire) > limit:
                        runs.append((b"".join(run), len(run)))
                        entries.append(
                            (log_entry(written + 1, written + len(run), runs[-1][0]), _DATA)
                        )
                        written += len(run)
                        run, size = [], 0
                    run.append(wire)
                    size += len(wire)
                runs.append((b"".join(run), len(run)))
                entries.append((log_entry(written + 1, written + len(run), runs[-1][0]), _DATA))
                written += len(run)
                try:
                    self._broker.publish_many(channel, entries)
                except Exception as e:  # unreachable, or a foreign key: the log is lost
                    self._logger.error(
                        "Resumable stream %s cannot write its log (%s); it ends failed",
                        self.sid,
                        e,
                    )
                    self._write_failed = True
                    self.stop("failed")
                else:
                    for reader in list(self._local):
                        reader._feed(runs)
                self._last_write = time.monotonic()
                self._started.set()
                self._space.notify()
        finally:
            self._written = written
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
                        pass  # readers take the silence for lost, as they should
                    except Exception as e:  # a foreign key over the log: it is lost
                        self._logger.error(
                            "Resumable stream %s cannot write its lease (%s); it ends failed",
                            self.sid,
                            e,
                        )
                        self.stop("failed")
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
    the stream's ending; it sends the logged bytes as they are.

    A stream returned from a view: the response reads it in place.
    """

    __slots__ = (
        "_sid",
        "_position",
        "_ended",
        "_heard",
        "_lost_after",
        "_producer",
        "_fed",
        "_fed_flag",
        "_fed_end",
    )

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
        # The whole log is read (positions are not broker ids); the runs up
        # to ``after`` are skipped.
        super().__init__(
            broker,
            (log_channel(sid),),
            after=0,
            last_event_id=None,
            queue_size=queue_size,
            max_buffer=max_buffer,
        )
        self._sid = sid
        self._position = after
        self._ended = False
        self._heard = time.monotonic()
        self._lost_after = lost_after
        # Fed by a producer of this process (Producer.attach) instead of the
        # broker: the runs' bytes and, at the end, the ending's.
        self._producer: Producer | None = None
        self._fed: collections.deque[tuple[bytes, int]] = collections.deque()
        self._fed_flag = Flag()
        self._fed_end: bytes | None = None

    def _feed(self, runs: list[tuple[bytes, int]]) -> None:
        """Queue runs (their bytes and their number of events) to send."""
        self._fed.extend(runs)
        self._fed_flag.notify()

    def _feed_end(self, reason: str) -> None:
        self._fed_end = b"" if reason == "done" else _end_event(reason).encode()
        self._fed_flag.set()

    def wait_started(self, timeout: float) -> bool:
        if self._producer is not None:
            return True
        return super().wait_started(timeout)

    def end(self) -> None:
        if self._producer is not None:
            self._finished = True
            self._fed_flag.set()
        super().end()

    def close(self) -> None:
        producer = self._producer
        if producer is not None:
            self._finished = True
            producer.detach(self)
            self._fed_flag.set()
            return
        super().close()

    def _take_fed(self, timeout: float | None) -> bytes | None:
        """:meth:`take` of a reader fed by its producer."""
        fed = self._fed
        if not fed:
            if self._finished:
                return b""
            if self._fed_end is not None:
                end, self._fed_end = self._fed_end, b""
                self.close()
                self.taken = 1 if end else 0
                return end or b""
            ready = lambda: bool(fed) or self._fed_end is not None or self._finished  # noqa: E731
            if not self._fed_flag.wait(ready, timeout):
                return None
            return self._take_fed(timeout)
        parts = []
        size = 0
        events = 0
        limit = self._max_buffer
        while fed and size < limit:
            wire, count = fed.popleft()
            parts.append(wire)
            size += len(wire)
            events += count
        self.taken = events
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __next__(self) -> Event:
        raise TypeError("a LogReader is read by its stream (take), not iterated")

    def take(self, timeout: float | None) -> bytes | None:
        if self._producer is not None:
            return self._take_fed(timeout)
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
        events = 0
        limit = self._max_buffer
        while pending and size < limit:
            event = pending.popleft()
            kind = event.event
            if kind == _DATA:
                run = self._run_after(event.data)
                if run is not None:
                    parts.append(run[0])
                    size += len(run[0])
                    events += run[1]
            elif kind == _DONE:
                self._ended = True
                break
            elif kind == END_EVENT:
                parts.append(Event(event.data, event=END_EVENT).encode())
                events += 1
                self._ended = True
                break
        if self._ended:
            pending.clear()
        if not parts:
            return self.take(timeout) if pending or self._ended else None
        self.taken = events
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _run_after(self, text: str) -> tuple[bytes, int] | None:
        """The bytes of a run's events after this reader's position, and
        their number."""
        head, _, body = text.partition("\n")
        first_text, _, last_text = head.partition(" ")
        last = int(last_text)
        position = self._position
        if last <= position:
            return None  # sent already
        self._position = last
        wire = body.encode()
        first = int(first_text)
        if first > position:
            return wire, last - first + 1
        # A resume in the middle of the run: from the event after ours, which
        # starts with its id line, at the start or after a blank line.
        line = b"id: %s.%d\n" % (self._sid.encode(), position + 1)
        if wire.startswith(line):
            return wire, last - position
        at = wire.find(b"\n\n" + line)
        return (wire[at + 2 :], last - position) if at >= 0 else None

    def _lost(self) -> None:
        """Nothing for ``lost_after``: the producer died. Record it in the log
        for the readers to come, and end this one with it."""
        ending = _end_event("lost")
        try:
            self._broker.publish(log_channel(self._sid), ending.data, event=END_EVENT, id=None)
        except BrokerUnavailable:
            self._pending.append(ending)
        except Exception as e:  # a foreign key over the log: it cannot be read either
            logger.warning(
                "Resumable stream %s: its log cannot be written (%s); this reader ends lost",
                self._sid,
                e,
            )
            self._pending.append(ending)
        # The recorded ending arrives live; wait for it briefly, else say it here.
        if not self._pending:
            self._fill(1.0)
        if not self._pending:
            self._pending.append(ending)


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


def _authorize(state: t.Any, sid: str, *, resume: bool) -> None:
    hook = state.extension._authorize
    if hook is not None and not hook(f"stream:{sid}"):
        _refuse(state, "forbidden", 403, resume=resume)


def _count_resume(state: t.Any, outcome: str) -> None:
    """Count a resume's outcome (one of ``metrics.RESUME_OUTCOMES``), with
    metrics on."""
    metrics = state.metrics
    if metrics is not None:
        metrics.resume(outcome)


def _refuse(state: t.Any, outcome: str, code: int, *, resume: bool) -> t.NoReturn:
    """Answer ``code``; count the outcome when the request is a resume."""
    if resume:
        _count_resume(state, outcome)
    abort(code)


def new_reader(state: t.Any, sid: str, after: int) -> LogReader:
    """A reader of stream ``sid``'s log after position ``after``."""
    settings = state.settings
    return LogReader(
        state.logs(),
        sid,
        after=after,
        # Never cut off: a reader is at most the whole log behind, and the
        # log's events are shared, not copied, by its readers.
        queue_size=settings.resume_max_events,
        max_buffer=settings.max_buffer,
    )


def reader_response(
    state: t.Any,
    sid: str,
    after: int,
    *,
    reader: LogReader | None = None,
    retry: int | None = None,
    heartbeat: t.Any = FROM_CONFIG,
    headers: t.Mapping[str, str] | None = None,
) -> Response:
    """The response that reads stream ``sid``'s log after ``after`` (with
    ``reader``, if given)."""
    if reader is None:
        reader = new_reader(state, sid, after)
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
            _count_resume(state, "not_found")  # the route starts a new stream
            return None
    except BrokerUnavailable:
        _refuse(state, "unavailable", 503, resume=True)
    _authorize(state, sid, resume=True)
    if _done_after(logs, sid, after):
        _count_resume(state, "done")
        return current_app.response_class(status=204)
    response = reader_response(state, sid, after, **options)
    _count_resume(state, "resumed")
    return response


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
        max_buffer=settings.max_buffer,
        app_logger=current_app.logger,
        metrics=state.metrics,
    )
    # The response of this request is fed by the producer (same process):
    # each run once it is in the log, without reading it back.
    reader = new_reader(state, sid, 0)
    producer.attach(reader)
    try:
        producer.start()
    except BrokerUnavailable:
        reader.close()
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
        abort(503)
    producer.wait_started(settings.start_wait)
    if producer.early_error is not None:
        reader.close()
        raise producer.early_error
    return reader_response(state, sid, 0, reader=reader, **options)


def stream_view(sid: str) -> t.Any:
    """``GET`` (resume) and ``DELETE`` (stop) on ``<prefix>/streams/<sid>``."""
    state = _state()
    resume = request.method == "GET"  # a resume's outcome is counted (not HEAD's)
    if check_stream_id(sid) is None:
        _refuse(state, "not_found", 404, resume=resume)
    _authorize(state, sid, resume=resume)
    logs = state.logs()
    try:
        if not logs.exists(log_channel(sid)):
            _refuse(state, "not_found", 404, resume=resume)
        if request.method == "DELETE":
            cancel(logs, sid)
            return "", 202
    except BrokerUnavailable:
        _refuse(state, "unavailable", 503, resume=resume)
    parsed = parse_resume_id(last_event_id())
    after = parsed[1] if parsed is not None and parsed[0] == sid else 0
    if after and _done_after(logs, sid, after):
        if resume:
            _count_resume(state, "done")
        return "", 204  # nothing more, ever: EventSource and evstream.js stop
    response = reader_response(state, sid, after)
    if resume:
        _count_resume(state, "resumed")
    return response


def _done_after(logs: Broker, sid: str, after: int) -> bool:
    """Whether stream ``sid`` ended ``done`` with no event after position
    ``after``."""
    try:
        events, _ = logs.history([log_channel(sid)], 0)
    except BrokerUnavailable:
        return False
    for _, event in events:
        if event.event == END_EVENT:
            return False
        if event.event == _DONE:
            last = parse_event_id(event.data)
            return last is not None and last <= after
    return False


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
