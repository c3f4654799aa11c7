"""The subscription a stream reads: replay after ``Last-Event-ID``, then live.

:class:`Subscription` is what ``EvStream.subscribe`` returns. It registers
with the broker's local hub (:mod:`flask_evstream.brokers.hub`) before it
reads the history, and drops ids not above the last one replayed, so there is
no gap and no duplicate between the two. Returned from a view, a stream reads
it in the request's own greenlet, with no extra greenlet or thread per
client; used in a generator (``yield from``, or ``with ... as events: for``)
it works like any other iterator and is closed when the stream closes.
"""

from __future__ import annotations

import collections
import logging
import typing as t

from .brokers.base import BrokerUnavailable
from .brokers.hub import Subscriber
from .event import Event
from .jsondata import dumps
from .pump import forget_end, on_end

if t.TYPE_CHECKING:
    from types import TracebackType

    from .brokers.base import Broker
    from .metrics import Metrics

__all__ = ["GAP_EVENT", "Subscription", "check_channel"]

logger = logging.getLogger("flask_evstream.channels")

#: The event type of the event a subscription sends first when events may
#: be missing between the client's ``Last-Event-ID`` and what it is sent:
#: the id is older than the history kept for one of its channels, the
#: replay was longer than ``EVSTREAM_HISTORY`` in all, or the broker could
#: not be reached to read the history. The client should reload its state.
#: Its data is JSON: ``{"channels": [...], "last_event_id": "..."}``.
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


class Subscription:
    """An iterator of the :class:`~flask_evstream.Event` s of some channels.

    Made by :meth:`flask_evstream.EvStream.subscribe`. The first iteration
    replays the history after ``last_event_id`` (after an ``evstream-gap``
    event when events may be missing), then yields live events as they are
    published. It ends when it was cut off for not keeping up, or when
    closed. A stream closes it when it closes, whether the subscription was
    returned from the view or iterated in its generator; elsewhere close it
    yourself, or use it as a context manager::

        with sse.subscribe("jobs") as events:
            for event in events:
                ...
    """

    __slots__ = (
        "_broker",
        "_channels",
        "_after",
        "_last_event_id",
        "_subscriber",
        "_pending",
        "_last",
        "_max_buffer",
        "_started",
        "_finished",
        "error",
        "abort",
        "_pump",
        "_metrics",
        "_counted",
        "taken",
    )

    def __init__(
        self,
        broker: Broker,
        channels: tuple[str, ...],
        *,
        after: int | None,
        last_event_id: str | None,
        queue_size: int,
        max_buffer: int = 64 * 1024,
        metrics: Metrics | None = None,
    ) -> None:
        self._broker = broker
        self._channels = channels
        self._after = after
        self._last_event_id = last_event_id
        self._subscriber = Subscriber(channels, queue_size)
        self._pending: collections.deque[Event] = collections.deque()  # the reader's
        self._last = after if after is not None else -1
        self._max_buffer = max_buffer
        self._started = False
        self._finished = False
        #: The stream reading this subscription failed with this, if it did.
        self.error: BaseException | None = None
        #: Set by the stream that reads this subscription in place: drops the
        #: client's connection (used when the client falls behind).
        self.abort: t.Callable[[], None] | None = None
        self._pump: t.Any = None
        self._metrics = metrics
        self._counted = False  # in the metrics' open subscriptions
        #: The number of events in the bytes :meth:`take` returned last.
        self.taken = 0

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels, in the order given, without repeats."""
        return self._channels

    # -- iterator and context manager -------------------------------------

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        pending = self._pending
        while not pending:
            if not self._fill(None):
                raise StopIteration
        return pending.popleft()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        self._started = True
        # Inside a generator's pump: unsubscribe when the stream closes,
        # whatever the generator is doing then.
        self._pump = on_end(self.close)
        if self._finished:
            return
        self._subscriber.on_overflow = self._drop_client
        self._broker.hub_add(self._subscriber)
        metrics = self._metrics
        if metrics is not None:
            self._counted = True
            metrics.subscriptions.inc()
        if self._finished:  # closed from another thread meanwhile
            self._broker.hub_remove(self._subscriber)
            self._uncount()
            return
        if self._after is None:
            return
        try:
            replay, gap = self._broker.history(self._channels, self._after)
            if metrics is not None:
                metrics.replays.inc()
        except BrokerUnavailable as e:
            # Live without history: tell the client it may have missed events.
            logger.warning(
                "No history for channels %r after id %d (%s): the subscription goes"
                " live and sends the %s event",
                self._channels,
                self._after,
                e,
                GAP_EVENT,
            )
            replay, gap = [], list(self._channels)
        except BaseException:
            self.close()
            raise
        if gap:
            if metrics is not None:
                metrics.gaps.inc()
            self._pending.append(
                Event(
                    # The library's JSON whatever the app's provider: protocol, not app data.
                    dumps({"channels": list(gap), "last_event_id": self._last_event_id}),
                    event=GAP_EVENT,
                )
            )
        last = self._last
        for event_id, event in replay:
            if event_id > last:
                last = event_id
                self._pending.append(event)
        self._last = last

    def _fill(self, timeout: float | None) -> bool:
        """Move what arrived into ``_pending``; ``False`` once it has ended."""
        if self._finished:
            return False
        if not self._started:
            self._start()
            if self._pending:
                return True
            if self._finished:
                return False
        queue = self._subscriber.wait(timeout)
        if queue is None:
            self.close()
            return False
        self._drain(queue)
        return True

    def _drain(self, queue: collections.deque[tuple[int, Event]]) -> None:
        """Move the queued live events into ``_pending``, dropping the ids
        the replay already sent."""
        last = self._last
        pending = self._pending
        while queue:
            event_id, event = queue.popleft()
            if event_id > last:
                last = event_id
                pending.append(event)
        self._last = last

    def _drop_client(self) -> None:
        # The client stopped reading: its write may be stuck with a full
        # socket buffer, where nothing else would end the stream. Drop the
        # connection; the browser reconnects and replays from history.
        if self._metrics is not None:
            self._metrics.cut_off("slow_client" if self._subscriber.queue_full else "reader_behind")
        abort = self.abort if self._pump is None else self._pump.abort
        if abort is not None:
            abort()

    def close(self) -> None:
        """Unsubscribe and free the queue. Safe to call more than once and
        from any thread or greenlet; an iteration waiting for events ends."""
        self._subscriber.close()
        if not self._finished:
            self._finished = True
            if self._started:
                self._broker.hub_remove(self._subscriber)
            if self._pump is not None:
                forget_end(self._pump, self.close)
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            assert self._metrics is not None
            self._metrics.subscriptions.dec()

    # -- the source interface of flask_evstream.response -----------------
    # Returned from a view, the stream reads the subscription in the
    # request's own greenlet: no pump, no extra greenlet per client.

    def wait_started(self, timeout: float) -> bool:
        if not self._started:
            self._start()
        return True

    def take(self, timeout: float | None) -> bytes | None:
        """Encoded pending events, at most about ``max_buffer`` bytes in one
        chunk (a long replay leaves in several writes)."""
        pending = self._pending
        if not pending and self._started and not self._finished:
            # The live path, once per wake-up per subscriber: no copies, and
            # one event (the common case) leaves as its cached bytes.
            queue = self._subscriber.wait(timeout)
            if queue is None:
                self.close()
                return b""
            if not queue:
                return None
            if len(queue) == 1:
                event_id, event = queue[0]
                if event_id > self._last:
                    queue.popleft()
                    self._last = event_id
                    self.taken = 1
                    return event.encode()
            self._drain(queue)
            if not pending:
                return self.take(timeout)
        if not pending and not self._fill(timeout):
            return b""
        if not pending:
            return None
        parts = []
        size = 0
        limit = self._max_buffer
        while pending and size < limit:
            wire = pending.popleft().encode()
            parts.append(wire)
            size += len(wire)
        self.taken = len(parts)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def end(self) -> None:
        """End the stream soon (graceful shutdown): stop receiving."""
        self._subscriber.close()
