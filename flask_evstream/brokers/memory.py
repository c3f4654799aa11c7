"""The in-memory broker: one process, history in a bounded ring per channel."""

from __future__ import annotations

import collections
import threading
import time
import typing as t

from ..event import Event
from .base import Broker, Replay

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """Events live in this process only: every worker has its own. Use it for
    one process (``flask run``, one gunicorn worker) and in tests; use Redis
    for more.

    Publishing delivers in the publisher's greenlet or thread, under a lock,
    so ids and delivery order agree even with publishers in threads. With a
    ``channel_ttl``, the history of a channel nobody published to for that
    long is freed (looked for at most once per ``min(channel_ttl, 60)``
    seconds, by a publish).
    """

    def __init__(self, *, history: int, channel_ttl: float | None = None) -> None:
        super().__init__(history=history, channel_ttl=channel_ttl)
        self._lock = threading.Lock()
        self._last_id = 0
        self._events: dict[str, collections.deque[tuple[int, Event]]] = {}
        self._dropped: dict[str, int] = {}  # highest id dropped from history
        self._published: dict[str, float] = {}  # when each channel was last published
        self._swept_below = 0  # the highest id of any history freed
        self._next_sweep = 0.0

    def publish(self, channel: str, data: str, *, event: str | None, id: int | None) -> int:
        with self._lock:
            if id is None:
                id = self._last_id + 1
            elif id <= self._last_id:
                raise ValueError(
                    f"publish id must be higher than the last id {self._last_id}, got {id}"
                )
            self._last_id = id
            message = Event(data, event=event, id=str(id))
            if self.history_size:
                ring = self._events.setdefault(channel, collections.deque())
                if len(ring) >= self.history_size:
                    self._dropped[channel] = ring.popleft()[0]
                ring.append((id, message))
            else:
                self._dropped[channel] = id
            if self.channel_ttl is not None:
                self._expire(channel, id)
            self.hub.deliver(channel, id, message)
            return id

    def exists(self, channel: str) -> bool:
        with self._lock:
            if not self._events.get(channel):
                return False
            if self.channel_ttl is None:
                return True
            published = self._published.get(channel, 0.0)
            return time.monotonic() - published < self.channel_ttl

    def _expire(self, channel: str, id: int) -> None:
        """Note the publish; free the channels not published for the TTL (under the lock)."""
        assert self.channel_ttl is not None
        now = time.monotonic()
        self._published[channel] = now
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.channel_ttl, 60.0)
        oldest = now - self.channel_ttl
        for name in [c for c, at in self._published.items() if at <= oldest]:
            del self._published[name]
            ring = self._events.pop(name, None)
            last = self._dropped.pop(name, 0)
            if ring:
                last = max(last, ring[-1][0])
            self._swept_below = max(self._swept_below, last)

    def history(self, channels: t.Sequence[str], after: int | None) -> Replay:
        if after is None:
            return [], []
        with self._lock:
            per_channel = {}
            from_start = []
            for channel in channels:
                ring = self._events.get(channel, ())
                # The ring is in id order: skip from the newest end.
                events = []
                for item in reversed(ring):
                    if item[0] <= after:
                        break
                    events.append(item)
                events.reverse()
                per_channel[channel] = events
                if channel not in self._dropped and (not ring or ring[0][0] > after):
                    from_start.append(channel)  # the history kept starts after `after`
            gap = [c for c in channels if self._dropped.get(c, 0) > after]
            if from_start and after < self._swept_below:
                # `after` may be older than a freed history of these channels.
                gap += from_start
        return self.merge(per_channel, gap)
