"""The local fan-out: the subscribers of this process, per channel.

A broker stores an event once, encoded once, and hands it to the
:class:`Hub` of each process, which delivers it to every local
:class:`Subscriber` without ever waiting: a subscriber whose queue is full
(``EVSTREAM_QUEUE_SIZE``) is cut off instead, so one slow client costs
neither memory nor the others' latency. Its stream ends; the browser
reconnects with ``Last-Event-ID`` and replays what it missed from history.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from ..concurrency import Flag
from ..event import Event

__all__ = ["Hub", "Subscriber"]


class Subscriber:
    """One stream's bounded queue of live events (thread- and greenlet-safe:
    one side delivers, one side reads)."""

    __slots__ = (
        "channels",
        "_queue",
        "_limit",
        "_flag",
        "_is_ready",
        "overflowed",
        "queue_full",
        "closed",
        "on_overflow",
    )

    def __init__(self, channels: tuple[str, ...], limit: int) -> None:
        self.channels = channels
        # Made on the first delivery: an idle subscriber costs no buffer.
        # Only deliver() (the broker's publisher or reader) assigns it.
        self._queue: collections.deque[tuple[int, Event]] | None = None
        self._limit = limit
        self._flag = Flag()
        self._is_ready = self._ready  # made once: the wait path allocates nothing
        #: This subscriber was cut off (its queue filled up, or the broker's
        #: reader fell behind: :meth:`Hub.cut_off`).
        self.overflowed = False
        #: Cut off because its own queue filled up: its client is slow.
        self.queue_full = False
        #: Closed: :meth:`get` returns what is left, then ``None``.
        self.closed = False
        #: Called once when the queue overflows (the stream drops the client).
        self.on_overflow: t.Callable[[], None] | None = None

    def deliver(self, item: tuple[int, Event]) -> None:
        """Queue an ``(id, event)`` pair; never waits. A full queue cuts the
        subscriber off. The pair is shared by every subscriber of the event
        (one allocation per publish, not per subscriber)."""
        if self.overflowed or self.closed:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        if len(queue) >= self._limit:
            self.queue_full = True
            self.cut_off()
            return
        queue.append(item)
        self._flag.notify()

    def cut_off(self) -> None:
        """End this subscriber because it fell behind, and drop its client."""
        if self.overflowed:
            return
        self.overflowed = True
        self._flag.set()
        if self.on_overflow is not None:
            self.on_overflow()

    def close(self) -> None:
        """Stop receiving; a reader waiting in :meth:`get` returns."""
        self.closed = True
        self._flag.set()

    def _ready(self) -> bool:
        return bool(self._queue) or self.overflowed or self.closed

    def wait(self, timeout: float | None) -> collections.deque[tuple[int, Event]] | None:
        """Wait up to ``timeout`` for an event; return the queue to pop from.

        Only the reading side pops, with ``popleft`` while the queue is not
        empty (safe while the delivering side appends).

        :return: the queue (empty when the time passed); ``None`` when the
            subscriber was cut off or closed and nothing is left.
        """
        queue = self._queue
        if not queue:
            self._flag.wait(self._is_ready, timeout)
            queue = self._queue
        if self.overflowed or (self.closed and not queue):
            return None
        if queue is None:
            return _EMPTY
        return queue

    def get(self, timeout: float | None) -> list[tuple[int, Event]] | None:
        """Return all queued events, waiting up to ``timeout`` for one.

        :return: the events; ``[]`` when the time passed; ``None`` when the
            subscriber was cut off or closed and nothing is left.
        """
        queue = self.wait(timeout)
        if queue is None:
            return None
        return [queue.popleft() for _ in range(len(queue))]


# What wait() returns for a subscriber that never had an event: always empty.
_EMPTY: collections.deque[tuple[int, Event]] = collections.deque(maxlen=0)


class Hub:
    """The subscribers of this process, per channel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # never held across I/O
        # Copy-on-write tuples: delivery iterates without a lock or a copy.
        self._subscribers: dict[str, tuple[Subscriber, ...]] = {}
        self._count = 0

    def add(self, subscriber: Subscriber) -> list[str]:
        """Register ``subscriber``; return the channels that had none before."""
        new = []
        with self._lock:
            for channel in subscriber.channels:
                current = self._subscribers.get(channel, ())
                if not current:
                    new.append(channel)
                self._subscribers[channel] = (*current, subscriber)
            self._count += 1
        return new

    def remove(self, subscriber: Subscriber) -> list[str]:
        """Unregister ``subscriber``; return the channels left with none."""
        gone = []
        with self._lock:
            found = False
            for channel in subscriber.channels:
                current = self._subscribers.get(channel, ())
                rest = tuple(s for s in current if s is not subscriber)
                found = found or len(rest) < len(current)
                if rest:
                    self._subscribers[channel] = rest
                elif channel in self._subscribers:
                    del self._subscribers[channel]
                    gone.append(channel)
            if found:
                self._count -= 1
        return gone

    def count(self) -> int:
        """The number of subscriptions (a stream with two channels counts once)."""
        return self._count

    def deliver(self, channel: str, event_id: int, event: Event) -> None:
        """Hand an event to the channel's subscribers. A broker delivers the
        ids of all channels in increasing order: a subscription drops an id
        not above the last one it has (its replay already sent it)."""
        item = (event_id, event)
        for subscriber in self._subscribers.get(channel, ()):
            subscriber.deliver(item)

    def cut_off(self, channel: str) -> None:
        """End the subscriptions of ``channel`` (they fell behind the broker);
        their clients reconnect and replay from history."""
        for subscriber in self._subscribers.get(channel, ()):
            subscriber.cut_off()
