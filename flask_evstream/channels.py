"""Broadcast channels: the local fan-out and the subscription a stream reads.

A broker (:mod:`flask_evstream.brokers`) stores each published event once,
encoded once, with a numeric id that increases across all channels of the
broker. This module hands those events to the subscribers of this process:

* :class:`Hub` keeps, per channel, the subscribers of this process and
  delivers an event to each without ever waiting: a subscriber whose queue is
  full (``EVSTREAM_QUEUE_SIZE``) is cut off instead, so one slow client costs
  neither memory nor the others' latency. Its stream ends; the browser
  reconnects with ``Last-Event-ID`` and replays what it missed from history.
* :class:`Subscription` is what ``EvStream.subscribe`` returns: it replays the
  history after ``Last-Event-ID``, then goes live, with no gap and no
  duplicate between the two (events are registered for before the history is
  read, and ids not above the last replayed one are dropped). Returned from a
  view, a stream reads it in the request's own greenlet, with no extra
  greenlet or thread per client; used with ``yield from`` it works like any
  other generator.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from .event import Event
from .pump import on_close, uses_gevent

if t.TYPE_CHECKING:
    from .brokers.base import Broker

__all__ = ["GAP_EVENT", "Hub", "Subscription", "check_channel", "parse_event_id"]

#: The event type of the event a subscription sends first when the client's
#: ``Last-Event-ID`` is older than the history kept for one of its channels:
#: events were lost; the client should reload its state. Its data is JSON:
#: ``{"channels": [...], "last_event_id": "..."}``.
GAP_EVENT = "evstream-gap"

_MAX_CHANNEL = 200


def check_channel(channel: t.Any) -> str:
    """Validate a channel name: a non-empty str of at most 200 printable
    characters.

    :raises TypeError: not a str.
    :raises ValueError: empty, too long, or holding control characters.
    """
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, got {type(channel).__name__}: {channel!r}")
    if not channel or len(channel) > _MAX_CHANNEL or not channel.isprintable():
        raise ValueError(
            f"channel must be 1 to {_MAX_CHANNEL} printable characters, got {channel!r}"
        )
    return channel


def parse_event_id(value: str | None) -> int | None:
    """Return the broker position of an event id we sent, or ``None``.

    Ids are decimal integers; anything else (a foreign id, garbage, more than
    18 digits) means "no position": the subscription starts live.
    """
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)


class Subscriber:
    """One stream's bounded queue of live events (thread- and greenlet-safe)."""

    __slots__ = (
        "channels",
        "_queue",
        "_limit",
        "_ready",
        "_waiting",
        "overflowed",
        "closed",
        "on_overflow",
    )

    def __init__(self, channels: tuple[str, ...], limit: int) -> None:
        self.channels = channels
        # Made on the first delivery: an idle subscriber costs no buffer.
        # Only deliver() (the broker's publisher or reader) assigns it.
        self._queue: collections.deque[tuple[int, Event]] | None = None
        self._limit = limit
        self._ready: t.Any = None  # an Event, made when the reader first waits
        self._waiting = False
        #: The queue filled up: this subscriber was cut off.
        self.overflowed = False
        self.closed = False
        #: Called once when the queue overflows (the stream drops the client).
        self.on_overflow: t.Callable[[], None] | None = None

    def deliver(self, event_id: int, event: Event) -> None:
        """Queue an event; never waits. A full queue cuts the subscriber off."""
        if self.overflowed or self.closed:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        if len(queue) >= self._limit:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            queue.append((event_id, event))
        if self._waiting:
            self._ready.set()

    def wake(self) -> None:
        self.closed = True
        if self._ready is not None:
            self._ready.set()

    def get(self, timeout: float | None) -> list[tuple[int, Event]] | None:
        """Return all queued events, waiting up to ``timeout`` for one.

        :return: the events; ``[]`` when the time passed; ``None`` when the
            subscriber was cut off or closed and nothing is left.
        """
        if not self._queue and not self.overflowed and not self.closed:
            if self._ready is None:
                self._ready = _event_class()()
            self._ready.clear()
            self._waiting = True
            if not self._queue and not self.overflowed and not self.closed:
                self._ready.wait(timeout)
            self._waiting = False
        queue = self._queue
        if self.overflowed or (self.closed and not queue):
            return None
        if not queue:
            return []
        return [queue.popleft() for _ in range(len(queue))]


def _event_class() -> type[t.Any]:
    if uses_gevent():
        from gevent.event import Event as GeventEvent

        return t.cast("type[t.Any]", GeventEvent)
    return threading.Event


class Hub:
    """The subscribers of this process, per channel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Copy-on-write tuples: delivery iterates without a lock or a copy.
        self._subscribers: dict[str, tuple[Subscriber, ...]] = {}

    def add(self, subscriber: Subscriber) -> list[str]:
        """Register ``subscriber``; return the channels that had none before."""
        new = []
        with self._lock:
            for channel in subscriber.channels:
                current = self._subscribers.get(channel, ())
                if not current:
                    new.append(channel)
                self._subscribers[channel] = (*current, subscriber)
        return new

    def remove(self, subscriber: Subscriber) -> list[str]:
        """Unregister ``subscriber``; return the channels left with none."""
        gone = []
        with self._lock:
            for channel in subscriber.channels:
                rest = tuple(s for s in self._subscribers.get(channel, ()) if s is not subscriber)
                if rest:
                    self._subscribers[channel] = rest
                else:
                    self._subscribers.pop(channel, None)
                    gone.append(channel)
        return gone

    def channels(self) -> list[str]:
        """The channels that have subscribers in this process."""
        return list(self._subscribers)

    def count(self) -> int:
        """The number of subscriptions (a stream with two channels counts once)."""
        return len({id(s) for subs in list(self._subscribers.values()) for s in subs})

    def deliver(self, channel: str, event_id: int, event: Event) -> None:
        """Hand an event to the channel's subscribers. A broker delivers the
        ids of all channels in increasing order: a subscription drops an id
        not above the last one it has (its replay already sent it)."""
        for subscriber in self._subscribers.get(channel, ()):
            subscriber.deliver(event_id, event)

    def cut_off(self, channel: str) -> None:
        """End the subscriptions of ``channel`` (they fell behind the broker);
        their clients reconnect and replay from history."""
        for subscriber in self._subscribers.get(channel, ()):
            subscriber.overflowed = True
            subscriber.wake()
            if subscriber.on_overflow is not None:
                subscriber.on_overflow()


class Subscription:
    """An iterator of the :class:`~flask_evstream.Event` s of some channels.

    Made by :meth:`flask_evstream.EvStream.subscribe`. The first iteration
    replays the history after ``last_event_id`` (after an ``evstream-gap``
    event when that id is older than the history kept), then yields live
    events as they are published. It ends when it was cut off for not keeping
    up, or when closed. Close it (or let the stream close it) to unsubscribe.
    """

    __slots__ = (
        "_broker",
        "_channels",
        "_after",
        "_last_event_id",
        "_subscriber",
        "_pending",
        "_last",
        "_started",
        "_finished",
        "_closed",
        "error",
        "done",
        "abort",
        "_pump",
    )

    def __init__(
        self,
        broker: Broker,
        channels: tuple[str, ...],
        *,
        after: int | None,
        last_event_id: str | None,
        queue_size: int,
    ) -> None:
        self._broker = broker
        self._channels = channels
        self._after = after
        self._last_event_id = last_event_id
        self._subscriber = Subscriber(channels, queue_size)
        self._pending: list[Event] = []  # only the reading side touches it
        self._last = after if after is not None else -1
        self._started = False
        self._finished = False
        self._closed = False
        #: The stream reading this subscription failed with this, if it did.
        self.error: BaseException | None = None
        self.done = False
        #: Set by the stream that reads this subscription in place: drops the
        #: client's connection (used when the client falls behind).
        self.abort: t.Callable[[], None] | None = None
        self._pump: t.Any = None

    # -- iterator -------------------------------------------------------

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        while not self._pending:
            if not self._fill(None):
                raise StopIteration
        return self._pending.pop(0)

    def _start(self) -> None:
        self._started = True
        # Inside a generator's pump: wake this subscription when the stream
        # closes (a thread blocked in it cannot be interrupted).
        self._pump = on_close(self.end)
        self._subscriber.on_overflow = self._drop_client
        self._broker.hub_add(self._subscriber)
        try:
            replay, gap = self._broker.history(self._channels, self._after)
        except BaseException:
            self._finish()
            raise
        if gap:
            self._pending.append(
                Event(
                    {"channels": list(gap), "last_event_id": self._last_event_id},
                    event=GAP_EVENT,
                )
            )
        for event_id, event in replay:
            if event_id > self._last:
                self._last = event_id
                self._pending.append(event)

    def _fill(self, timeout: float | None) -> bool:
        """Move what arrived into ``_pending``; ``False`` once it has ended."""
        if self._finished:
            return False
        if not self._started:
            self._start()
            if self._pending:
                return True
        batch = self._subscriber.get(timeout)
        if batch is None:
            self._finish()
            return False
        for event_id, event in batch:
            if event_id > self._last:  # drop what the replay already sent
                self._last = event_id
                self._pending.append(event)
        return True

    def _drop_client(self) -> None:
        # The client stopped reading: its write may be stuck with a full
        # socket buffer, where nothing else would end the stream. Drop the
        # connection; the browser reconnects and replays from history.
        abort = self.abort if self._pump is None else self._pump.abort
        if abort is not None:
            abort()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.done = True
            if self._started:
                self._broker.hub_remove(self._subscriber)

    def close(self) -> None:
        """Unsubscribe. Safe to call more than once and from another thread."""
        self._closed = True
        self._subscriber.wake()
        self._finish()

    # -- the source interface of flask_evstream.response -----------------
    # Returned from a view, the stream reads the subscription in the
    # request's own greenlet: no pump, no extra greenlet per client.

    def wait_started(self, timeout: float) -> bool:
        if not self._started:
            self._start()
        return True

    def commit(self) -> BaseException | None:
        return None

    def take(self, timeout: float | None) -> bytes | None:
        if not self._pending and not self._fill(timeout):
            return b""
        if not self._pending:
            return None
        parts = [event.encode() for event in self._pending]
        self._pending.clear()
        return b"".join(parts)

    def end(self) -> None:
        self._subscriber.wake()
