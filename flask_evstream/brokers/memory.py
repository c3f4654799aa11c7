"""The in-memory broker: one process, history in a bounded ring per channel."""

from __future__ import annotations

import collections
import threading
import typing as t

from ..event import Event
from .base import Broker, Replay

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """Events live in this process only: every worker has its own. Use it for
    one process (``flask run``, one gunicorn worker) and in tests; use Redis
    for more.

    Publishing delivers in the publisher's greenlet or thread, under a lock,
    so ids and delivery order agree even with publishers in threads.
    """

    def __init__(self, *, history: int) -> None:
        super().__init__(history=history)
        self._lock = threading.Lock()
        self._last_id = 0
        self._events: dict[str, collections.deque[tuple[int, Event]]] = {}
        self._dropped: dict[str, int] = {}  # highest id dropped from history

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
            self.hub.deliver(channel, id, message)
            return id

    def history(self, channels: t.Sequence[str], after: int | None) -> Replay:
        if after is None:
            return [], []
        with self._lock:
            per_channel = {}
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
            gap = [c for c in channels if self._dropped.get(c, 0) > after]
        return self.merge(per_channel, gap)
