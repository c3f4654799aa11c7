"""The broker interface, and what every broker shares: the local hub, the
registration of local subscribers, and the bounded merge of a replay."""

from __future__ import annotations

import abc
import collections
import heapq
import os
import threading
import typing as t
import weakref

from ..concurrency import new_lock
from ..event import Event
from .hub import Hub, Subscriber

__all__ = ["Broker", "BrokerUnavailable", "Replay", "all_brokers"]

#: Events after a position, oldest first, and the channels whose history
#: no longer reaches back to it.
Replay = tuple[list[tuple[int, Event]], list[str]]


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached (Redis is down or unreachable).

    :meth:`flask_evstream.EvStream.publish` raises it: the event may or may
    not have been stored when the connection broke during the call, so it is
    not retried for you. Subscriptions never raise it: during an outage they
    go live without history and send the gap event.

    .. versionadded:: 0.2
    """


# Every broker of this process, for subscribers() and the worker's exit.
_brokers: weakref.WeakSet[Broker] = weakref.WeakSet()
_lock_guard = threading.Lock()  # only to make a registration lock once

#: The longest channel TTL accepted, in seconds (a year).
MAX_TTL = 365 * 86400.0


def seconds(name: str, value: t.Any) -> float:
    """Validate a duration: a number of seconds above 0, at most a year."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TTL:
        raise ValueError(
            f"{name} must be a number of seconds above 0 and at most {MAX_TTL:g}, got {value!r}"
        )
    return float(value)


# The states of a queued registration.
_WAITING, _TAKEN, _DONE, _CANCELLED = range(4)


class _Registration:
    """A subscriber waiting in :meth:`Broker.hub_add`'s queue."""

    __slots__ = ("subscriber", "state")

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.state = _WAITING


def all_brokers() -> list[Broker]:
    """The brokers alive in this process."""
    return list(_brokers)


class Broker(abc.ABC):
    """Stores published events and delivers them to this process's subscribers.

    Every event gets an integer id that increases across all channels of the
    broker, so one ``Last-Event-ID`` is a position in every channel of a
    multi-channel stream. A broker keeps ``history`` events per channel and
    knows, per channel, the highest id it dropped, to tell a client whose
    position is older than the history (a gap).

    :param history: events kept per channel (0: none), and the most one
        replay sends, whatever the number of channels.
    :param channel_ttl: seconds the history of a channel is kept after its
        last publish (``None``: forever). A replay that reaches back only to
        the start of a channel's current history sends the gap event when
        the client's id may be older than an expired history.
    """

    def __init__(self, *, history: int, channel_ttl: float | None = None) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"history must be an integer number of events >= 0, got {history!r}")
        #: Events kept per channel.
        self.history_size = history
        #: Seconds a channel's history is kept after its last publish, or ``None``.
        self.channel_ttl = None if channel_ttl is None else seconds("channel_ttl", channel_ttl)
        #: The subscribers of this process.
        self.hub = Hub()
        self._registration: t.Any = None
        self._registration_pid = 0
        self._queue: collections.deque[_Registration] = collections.deque()
        self._queue_guard = threading.Lock()  # never held across I/O
        _brokers.add(self)

    @abc.abstractmethod
    def publish(self, channel: str, data: str, *, event: str | None, id: int | None) -> int:
        """Store an event and deliver it to every subscriber of ``channel``.

        :param data: the data, already text (JSON encoded by the caller).
        :param id: an explicit id, higher than every id before; ``None`` for
            the next one.
        :return: the event's id.
        :raises ValueError: ``id`` is not higher than the last id.
        :raises BrokerUnavailable: the broker cannot be reached.
        """

    @abc.abstractmethod
    def history(self, channels: t.Sequence[str], after: int | None) -> Replay:
        """Return the kept events of ``channels`` with ids above ``after``
        (none when ``after`` is ``None``), at most ``history`` of them in all
        (the newest), and the channels with a gap.

        :raises BrokerUnavailable: the broker cannot be reached.
        """

    def publish_many(self, channel: str, items: t.Sequence[tuple[str, str | None]]) -> list[int]:
        """Store several events of one channel, in order, in one go where
        the broker can (Redis: one round trip). ``items`` are ``(data,
        event)`` pairs; returns their ids.

        :raises BrokerUnavailable: the broker cannot be reached (some of the
            events may be stored).
        """
        return [self.publish(channel, data, event=event, id=None) for data, event in items]

    def exists(self, channel: str) -> bool:
        """Whether ``channel`` has a history kept (an event published within
        its TTL, still in the history).

        :raises BrokerUnavailable: the broker cannot be reached.
        """
        return bool(self.history([channel], 0)[0])

    def check_channels(self, channels: t.Sequence[str]) -> None:
        """Refuse channels this broker cannot serve in one subscription
        (every broker but the Redis Cluster one takes any valid names).

        :raises ValueError: what is wrong and what is allowed.
        """
        return None

    def merge(
        self, per_channel: t.Mapping[str, t.Sequence[tuple[int, Event]]], gap: t.Iterable[str]
    ) -> Replay:
        """Merge the replays of several channels (each oldest first) into
        one, oldest first, keeping the newest ``history`` events: a channel
        that loses events to that bound has a gap too."""
        gap = list(gap)
        total = sum(len(events) for events in per_channel.values())
        excess = total - self.history_size
        if excess > 0:
            # The ids below the cut: the excess-th smallest of all.
            ids = (n for events in per_channel.values() for n, _ in events)
            cut = heapq.nsmallest(excess, ids)[-1]
            trimmed = {}
            for channel, events in per_channel.items():
                kept = [item for item in events if item[0] > cut]
                if len(kept) < len(events) and channel not in gap:
                    gap.append(channel)
                trimmed[channel] = kept
            per_channel = trimmed
        if len(per_channel) == 1:
            merged = list(next(iter(per_channel.values())))
        else:
            merged = list(heapq.merge(*per_channel.values(), key=lambda item: item[0]))
        return merged, gap

    # -- local subscribers --------------------------------------------------

    def _registration_lock(self) -> t.Any:
        # Made in the process and the concurrency that use it (a gunicorn
        # worker forks, then gevent patches), so that a greenlet waiting for
        # it lets the others run. The queue of waiting registrations is made
        # with it: a forked worker starts with none.
        pid = os.getpid()
        if self._registration is None or self._registration_pid != pid:
            with _lock_guard:
                if self._registration is None or self._registration_pid != pid:
                    self._registration = new_lock()
                    self._queue = collections.deque()
                    self._queue_guard = threading.Lock()
                    self._registration_pid = pid
        return self._registration

    def hub_add(self, subscriber: Subscriber) -> None:
        """Register a local subscriber, before its history is read.

        Registrations and removals are serialized: when this returns, the
        broker delivers every event of the subscriber's channels that its
        history read, done after, may not hold (a second subscriber never
        reads its history before the first one's channel is set up, and a
        channel being removed is not removed under a new subscriber).

        The subscribers that arrive while one registration runs wait in a
        queue, and the next one to hold the lock registers them all with one
        :meth:`channels_added` (with Redis, one counter read and one wake of
        the reader for a whole burst of reconnecting clients). A failed
        :meth:`channels_added` fails its caller only: the others go back to
        the queue.
        """
        lock = self._registration_lock()
        queue, guard = self._queue, self._queue_guard
        entry = _Registration(subscriber)
        with guard:
            queue.append(entry)
        try:
            with lock:
                if entry.state != _DONE:
                    self._register_queued(entry, queue, guard)
        except BaseException:
            with guard:
                state = entry.state
                entry.state = _CANCELLED  # a batch running now drops it
                if state == _WAITING:
                    queue.remove(entry)
            if state == _DONE:  # interrupted after its batch registered it
                self.hub_remove(subscriber)
            raise

    def _register_queued(
        self, own: _Registration, queue: collections.deque[_Registration], guard: t.Any
    ) -> None:
        """Register every queued subscriber, ``own``'s among them (under the
        registration lock)."""
        with guard:
            batch = list(queue)  # all waiting: a cancelled one leaves the queue
            queue.clear()
            for entry in batch:
                entry.state = _TAKEN
        new: list[str] = []
        try:
            for entry in batch:
                new.extend(self.hub.add(entry.subscriber))
            if new:
                self.channels_added(new)
        except BaseException:
            # The hub first (no I/O: nothing interrupts it), so that a put-back
            # subscriber is not in it when its turn comes.
            gone = self._hub_remove_all([entry.subscriber for entry in batch])
            with guard:  # the others wait for their own turn
                back = [e for e in batch if e is not own and e.state == _TAKEN]
                for entry in back:
                    entry.state = _WAITING
                queue.extendleft(reversed(back))
            if gone:
                self.channels_removed(gone)
            raise
        with guard:
            cancelled = [entry.subscriber for entry in batch if entry.state == _CANCELLED]
            for entry in batch:
                if entry.state == _TAKEN:
                    entry.state = _DONE
        if cancelled:  # their callers were interrupted meanwhile
            gone = self._hub_remove_all(cancelled)
            if gone:
                self.channels_removed(gone)

    def _hub_remove_all(self, subscribers: list[Subscriber]) -> list[str]:
        """Take ``subscribers`` out of the hub; return the channels left
        with no subscriber."""
        gone: list[str] = []
        for subscriber in subscribers:
            gone.extend(self.hub.remove(subscriber))
        return gone

    def hub_remove(self, subscriber: Subscriber) -> None:
        """Unregister a local subscriber."""
        with self._registration_lock():
            gone = self.hub.remove(subscriber)
            if gone:
                self.channels_removed(gone)

    def channels_added(self, channels: list[str]) -> None:
        """Channels that now have local subscribers (a reader starts on them).
        Called with the registration lock held."""
        return None

    def channels_removed(self, channels: list[str]) -> None:
        """Channels that no longer have local subscribers. Called with the
        registration lock held."""
        return None

    def close(self) -> None:
        """Release connections and background readers."""
        return None
