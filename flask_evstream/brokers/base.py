"""The broker interface."""

from __future__ import annotations

import abc
import typing as t

from ..channels import Hub, Subscriber
from ..event import Event

__all__ = ["Broker", "Replay"]

#: Events after a position, oldest first, and the channels whose history
#: no longer reaches back to it.
Replay = tuple[list[tuple[int, Event]], list[str]]


class Broker(abc.ABC):
    """Stores published events and delivers them to this process's subscribers.

    Every event gets an integer id that increases across all channels of the
    broker, so one ``Last-Event-ID`` is a position in every channel of a
    multi-channel stream. A broker keeps ``history`` events per channel and
    knows, per channel, the highest id it dropped, to tell a client whose
    position is older than the history (a gap).

    :param history: events kept per channel (0: none).
    """

    def __init__(self, *, history: int) -> None:
        self.history_size = history
        #: The subscribers of this process.
        self.hub = Hub()

    @abc.abstractmethod
    def publish(self, channel: str, data: str, *, event: str | None, id: int | None) -> int:
        """Store an event and deliver it to every subscriber of ``channel``.

        :param data: the data, already text (JSON encoded by the caller).
        :param id: an explicit id, higher than every id before; ``None`` for
            the next one.
        :return: the event's id.
        :raises ValueError: ``id`` is not higher than the last id.
        """

    @abc.abstractmethod
    def history(self, channels: t.Sequence[str], after: int | None) -> Replay:
        """Return the kept events of ``channels`` with ids above ``after``
        (none when ``after`` is ``None``), and the channels with a gap."""

    def hub_add(self, subscriber: Subscriber) -> None:
        """Register a local subscriber (before its history is read)."""
        new = self.hub.add(subscriber)
        if new:
            try:
                self.channels_added(new)
            except BaseException:
                self.hub.remove(subscriber)
                raise

    def hub_remove(self, subscriber: Subscriber) -> None:
        """Unregister a local subscriber."""
        gone = self.hub.remove(subscriber)
        if gone:
            self.channels_removed(gone)

    def channels_added(self, channels: list[str]) -> None:
        """Channels that now have local subscribers (a reader starts on them)."""
        return None

    def channels_removed(self, channels: list[str]) -> None:
        """Channels that no longer have local subscribers."""
        return None

    def close(self) -> None:
        """Release connections and background readers."""
        return None
