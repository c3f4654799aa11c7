"""Run a stream's iterable in its own greenlet (or thread) and buffer its output.

The WSGI server iterates the response body in the request's own greenlet or
thread; it can only write when that iteration returns a chunk. To write
heartbeats while the user's generator is blocked, and to notice a closed
connection while it is blocked, the generator runs apart, in a
:class:`Pump`, and the body (:mod:`flask_evstream.response`) takes what it has
produced, waiting at most one heartbeat interval.

Under gevent (monkey-patched, as gunicorn's gevent worker does) the pump is a
greenlet, and :meth:`Pump.close` kills it: the generator is interrupted where
it blocks, its ``finally`` blocks run, and nothing outlives the request.
Under threads (``flask run``, gunicorn's ``gthread`` worker) a thread cannot
be interrupted, so a generator blocked in a call is closed by its own thread
when that call returns; :meth:`Pump.close` waits :data:`THREAD_CLOSE_GRACE`
for a generator that yields soon and otherwise returns, so the server thread
is free at once (the request context is then torn down before the
generator's ``finally`` runs).

Output is coalesced: events ready together leave in one write. Under gevent
the pump hands control to the writer after an event whose generator step
took ``SLOW_GAP`` or more (it blocked, or computed), so the events of a slow
producer leave at once even when it computes without blocking, while a fast
producer fills a batch; only the generator's own step is timed, not the time
other greenlets ran. The pump waits when ``max_buffer`` bytes are pending (a
slow client holds back its own generator, not the worker's memory).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import itertools
import logging
import threading
import time
import typing as t

from werkzeug.exceptions import HTTPException

from .concurrency import Flag, spawn, uses_gevent
from .event import encode_item, takes_id

__all__ = ["Pump", "Source", "uses_gevent"]

#: An event whose generator step took this long (seconds) is from a slow
#: producer: hand it to the writer at once instead of batching.
SLOW_GAP = 0.001

#: How long :meth:`Pump.close` waits for a greenlet to stop.
CLOSE_TIMEOUT = 5.0

#: How long :meth:`Pump.close` waits for a thread to stop: a generator that
#: yields often stops within it; one blocked in a call is left to close
#: itself when the call returns, so the server's thread is not held.
THREAD_CLOSE_GRACE = 0.05

_thread_names = itertools.count(1)

#: The pump running in this greenlet or thread, if any.
_current: contextvars.ContextVar[Pump | None] = contextvars.ContextVar(
    "flask_evstream.pump", default=None
)


def on_end(callback: t.Callable[[], None]) -> Pump | None:
    """Call ``callback`` when the stream running this code ends or is closed
    (:meth:`Pump.end`, which :meth:`Pump.close` calls first).

    For sources of our own that block (a channel subscription): a thread
    cannot be interrupted, but such a source can be woken.

    :return: the pump this runs in, or ``None``.
    """
    pump = _current.get()
    if pump is None:
        return None
    pump._wakers.append(callback)
    if pump._closed:
        callback()
    return pump


def forget_end(pump: Pump, callback: t.Callable[[], None]) -> None:
    """Undo :func:`on_end` (a source closed before its stream ended)."""
    with contextlib.suppress(ValueError):
        pump._wakers.remove(callback)


class Source(t.Protocol):
    """What a stream body reads from: a :class:`Pump`, or a source that can
    wait with a timeout by itself (a channel subscription)."""

    error: BaseException | None
    #: Set by the stream: drops the client's connection.
    abort: t.Callable[[], None] | None
    #: The number of events in the bytes :meth:`take` returned last (for
    #: :mod:`flask_evstream.metrics`: set once per take, never per event).
    taken: int

    def take(self, timeout: float | None) -> bytes | None:
        """Pending bytes; ``None`` after ``timeout``; ``b""`` at the end."""

    def end(self) -> None:
        """Make :meth:`take` finish soon (graceful shutdown)."""

    def close(self) -> None:
        """Stop producing and release everything."""


class Pump:
    """Iterate ``iterable`` apart from the request and buffer encoded events.

    :param iterable: what the view returned.
    :param logger: where an exception from the iterable is logged.
    :param max_buffer: bytes pending before the producer waits for the writer.
    :param first_id: with ``ids``, the id of the first numbered event, or
        ``None`` to leave ids alone.
    """

    def __init__(
        self,
        iterable: t.Iterable[t.Any],
        *,
        logger: logging.Logger,
        max_buffer: int,
        first_id: int | None = None,
    ) -> None:
        self._iterable = iterable
        self._logger = logger
        self._max_buffer = max_buffer
        self._next_id = first_id
        self._gevent = uses_gevent()
        # The producer appends and the reader pops (both atomic), and each
        # byte counter has one writer, so the hot path takes no lock; each
        # side waits on a Flag, which the other side notifies at no cost
        # while nobody waits.
        self._queue: collections.deque[bytes] = collections.deque()
        self._produced_bytes = 0
        self._consumed_bytes = 0
        self._ready = Flag()  # the reader waits: something queued, or the end
        self._space = Flag()  # the producer waits: the reader took something
        self._lock = threading.Lock()  # error vs commit only
        self._produced = False
        self._committed = False  # the response has started: errors are logged
        self._closed = False
        self._ran = False  # _run began (a greenlet killed before it starts never runs)
        #: True once the iterable is exhausted, failed or was closed.
        self.done = False
        #: The exception the iterable raised, if it did.
        self.error: BaseException | None = None
        self._worker: t.Any = None
        self._wakers: list[t.Callable[[], None]] = []
        #: Set by the stream: drops the client's connection.
        self.abort: t.Callable[[], None] | None = None
        #: The number of items in the chunk :meth:`take` returned last.
        self.taken = 0

    def start(self) -> None:
        """Start iterating in a new greenlet (gevent) or daemon thread.

        The iterable runs in a copy of the caller's context, so Flask's
        request and app context (``request``, ``session``, ``g``,
        ``current_app``) are what they were in the view.
        """
        run = contextvars.copy_context().run
        self._worker = spawn(run, self._run, name=f"evstream-pump-{next(_thread_names)}")

    def _has_news(self) -> bool:
        return bool(self._queue) or self.done or self._closed

    def _has_space(self) -> bool:
        return self._produced_bytes - self._consumed_bytes < self._max_buffer or self._closed

    def _wait_news(self, timeout: float | None) -> bool:
        return self._ready.wait(self._has_news, timeout)

    def wait_started(self, timeout: float) -> bool:
        """Wait until the first item is queued or the iterable ended.

        :return: whether that happened within ``timeout`` seconds.
        """
        return self._wait_news(timeout)

    def commit(self) -> BaseException | None:
        """Mark the response as started and return an early error, if any.

        An exception the iterable raised before producing anything, while
        the view was still waiting in :meth:`wait_started`, is not logged
        but returned here, so that the view can raise it and Flask answers
        with the matching error response (``abort(403)`` gives 403). After
        this call, exceptions are logged and end the stream.
        """
        with self._lock:
            self._committed = True
            if self.error is not None and not self._produced:
                return self.error
            return None

    def _run(self) -> None:
        self._ran = True
        _current.set(self)
        iterator = None
        queue = self._queue
        monotonic = time.monotonic
        yield_to_writer = None
        if self._gevent:
            import gevent

            yield_to_writer = gevent.sleep
        try:
            if self._closed:
                return
            iterator = iter(self._iterable)
            next_item = iterator.__next__
            while True:
                began = monotonic()
                try:
                    item = next_item()
                except StopIteration:
                    break
                slow = monotonic() - began >= SLOW_GAP
                if self._next_id is not None and takes_id(item):
                    chunk = encode_item(item, self._next_id)
                    self._next_id += 1
                else:
                    chunk = encode_item(item)
                if not chunk:
                    continue
                if self._closed:
                    break
                queue.append(chunk)
                self._produced = True
                self._produced_bytes += len(chunk)
                self._ready.notify()
                if self._produced_bytes - self._consumed_bytes >= self._max_buffer:
                    while not self._space.wait(self._has_space, None):
                        pass
                    if self._closed:
                        break
                elif slow and yield_to_writer is not None:
                    # A producer that took its time: send this event now,
                    # even if the producer computes on without blocking.
                    yield_to_writer(0)
        except Exception as e:
            with self._lock:
                self.error = e
                early = not self._committed and not self._produced
            if early:
                pass
            elif isinstance(e, HTTPException):
                # A late abort(403): the status line is long gone. Not a bug
                # in the server: check permissions before the first yield.
                self._logger.info(
                    "Event stream %r raised %s after it started; the stream ends"
                    " (an HTTP error becomes the response only before the first event).",
                    getattr(self._iterable, "__qualname__", self._iterable),
                    e,
                )
            else:
                self._logger.error(
                    "Exception in event stream %r; the stream ends.",
                    getattr(self._iterable, "__qualname__", self._iterable),
                    exc_info=True,
                )
        finally:
            try:
                self._close_iterable(iterator)
            finally:
                self.done = True
                self._ready.set()

    def _close_iterable(self, iterator: t.Any) -> None:
        # The iterator first (a generator's finally runs), then the iterable
        # when it is another object with a close() of its own.
        for obj in (iterator, self._iterable) if iterator is not self._iterable else (iterator,):
            close = getattr(obj, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:
                self._logger.error("Exception while closing event stream", exc_info=True)

    def take(self, timeout: float | None) -> bytes | None:
        """Return everything queued as one chunk, waiting up to ``timeout``.

        :return: the pending bytes; ``None`` when ``timeout`` passed with
            nothing to send; ``b""`` when the iterable has ended and all was
            taken.
        """
        queue = self._queue
        if not queue:
            self._wait_news(timeout)
            if not queue:
                return b"" if self.done or self._closed else None
        parts = [queue.popleft() for _ in range(len(queue))]
        self.taken = len(parts)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        self._consumed_bytes += len(chunk)
        self._space.notify()
        return chunk

    def end(self) -> None:
        """End the stream soon: :meth:`take` returns what is pending, then ``b""``.

        Safe to call from any greenlet or thread; :meth:`close` still has to
        be called to stop the iterable.
        """
        self._closed = True
        self._ready.set()
        self._space.set()
        for wake in tuple(self._wakers):
            wake()

    def close(self) -> None:
        """Stop the iterable and release it.

        Under gevent the greenlet is killed where it waits, and this returns
        once the generator's ``finally`` blocks ran (or after
        :data:`CLOSE_TIMEOUT`, with a warning). Under threads the thread is
        told to stop and closes the iterable at its next item; this waits
        :data:`THREAD_CLOSE_GRACE` at most, so a generator blocked in a call
        does not hold the server's thread (its own thread closes it when the
        call returns).
        """
        self.end()
        worker = self._worker
        if worker is None:
            self._close_iterable(None)
            return
        if not self._gevent:
            # The thread closes the iterable itself, now or when its call returns.
            worker.join(THREAD_CLOSE_GRACE)
            if worker.is_alive():
                self._logger.info(
                    "Event stream %r is blocked in a call: its thread closes it when"
                    " the call returns (the request context is torn down now)",
                    getattr(self._iterable, "__qualname__", self._iterable),
                )
            return
        worker.kill(block=True, timeout=CLOSE_TIMEOUT)
        if not self._ran:  # killed before it started: _run never closes it
            self._close_iterable(None)
        if not worker.dead:
            self._logger.warning(
                "Event stream %r did not stop within %s s of being closed;"
                " its request context is torn down under it",
                getattr(self._iterable, "__qualname__", self._iterable),
                CLOSE_TIMEOUT,
            )
