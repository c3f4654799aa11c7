"""The concurrency choice: gevent greenlets or threads.

gunicorn's gevent worker monkey-patches ``threading`` when the worker starts;
``flask run`` and the ``gthread`` worker use real threads. Everything in
flask-evstream that starts a background task or waits for a signal asks this
module, at the moment it needs one (not at import, which may come before the
patching), so that a greenlet never blocks its whole worker on a real lock.
"""

from __future__ import annotations

import sys
import threading
import typing as t

__all__ = ["uses_gevent", "spawn", "new_event", "new_lock", "Flag"]


def uses_gevent() -> bool:
    """Return whether this process runs under gevent's monkey-patched threading."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def spawn(target: t.Callable[..., None], *args: t.Any, name: str) -> t.Any:
    """Run ``target(*args)`` in a new greenlet (gevent) or daemon thread.

    :param name: the thread's name (greenlets are not named).
    :return: the greenlet or the started thread.
    """
    if uses_gevent():
        import gevent

        return gevent.spawn(target, *args)
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def new_event() -> t.Any:
    """A new event of the running kind: :class:`gevent.event.Event` or
    :class:`threading.Event` (the same interface)."""
    if uses_gevent():
        from gevent.event import Event

        return Event()
    return threading.Event()


def new_lock() -> t.Any:
    """A new lock that may be held across I/O: gevent's lock under gevent (a
    greenlet waiting for it lets the others run), else a thread lock."""
    if uses_gevent():
        from gevent.lock import RLock

        return RLock()
    return threading.RLock()


class Flag:
    """A one-waiter wake-up with no cost while nobody waits.

    The waiting side raises ``waiting`` before it checks its condition once
    more and then waits; the other side calls :meth:`notify` after changing
    the state, which sets the event only when somebody waits. No wake-up is
    lost, and a busy producer pays one attribute read per item.
    """

    __slots__ = ("waiting", "_event")

    def __init__(self) -> None:
        #: True while the waiting side is (about to be) blocked.
        self.waiting = False
        self._event: t.Any = None  # made on the first wait

    def wait(self, ready: t.Callable[[], bool], timeout: float | None) -> bool:
        """Wait up to ``timeout`` until ``ready()``; return ``ready()``."""
        if ready():
            return True
        event = self._event
        if event is None:
            event = self._event = new_event()
        event.clear()
        self.waiting = True
        try:
            if not ready():
                event.wait(timeout)
        finally:
            self.waiting = False
        return ready()

    def notify(self) -> None:
        """Wake the waiter, if one waits."""
        if self.waiting:
            event = self._event
            if event is not None:
                event.set()

    def set(self) -> None:
        """Wake the waiter whether or not it has raised its flag yet (for the
        end of a stream, from any thread: ``ready()`` must then hold)."""
        event = self._event
        if event is not None:
            event.set()
