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
    the state, which wakes the waiter only when there is one. No wake-up is
    lost, and a busy producer pays one attribute read per item.

    Under gevent the waiter parks on a :class:`gevent.hub.Waiter` (what
    gevent's own queues use) and is woken by one hub callback; a
    :class:`gevent.event.Event` would allocate several objects per set and
    wait, which shows as extra garbage collections when one publish wakes
    thousands of subscribers. Under threads it waits on a
    :class:`threading.Event`.
    """

    __slots__ = ("waiting", "_event", "_waiter")

    def __init__(self) -> None:
        #: True while the waiting side is (about to be) blocked.
        self.waiting = False
        self._event: t.Any = None  # threads: made on the first wait
        self._waiter: t.Any = None  # gevent: the parked waiter, while it waits

    def wait(self, ready: t.Callable[[], bool], timeout: float | None) -> bool:
        """Wait up to ``timeout`` until ``ready()``; return ``ready()``."""
        if ready():
            return True
        if uses_gevent():
            return self._wait_gevent(ready, timeout)
        event = self._event
        if event is None:
            event = self._event = threading.Event()
        event.clear()
        self.waiting = True
        try:
            if not ready():
                event.wait(timeout)
        finally:
            self.waiting = False
        return ready()

    def _wait_gevent(self, ready: t.Callable[[], bool], timeout: float | None) -> bool:
        gevent_hub = _gevent_hub()
        hub = gevent_hub.get_hub()
        waiter = gevent_hub.Waiter(hub)
        self._waiter = waiter
        self.waiting = True
        try:
            if ready():
                return True
            if timeout is None:
                waiter.get()
            else:
                timer = hub.loop.timer(max(timeout, 0.0))
                try:
                    timer.start(waiter.switch, None)
                    waiter.get()
                finally:
                    timer.close()
        finally:
            self.waiting = False
            self._waiter = None
        return ready()

    def notify(self) -> None:
        """Wake the waiter, if one waits."""
        if self.waiting:
            self.set()

    def set(self) -> None:
        """Wake the waiter whether or not it has raised its flag yet (for the
        end of a stream, from any thread: ``ready()`` must then hold)."""
        self.waiting = False  # woken once: later notifies of this wait cost nothing
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            _wake(waiter)
            return
        event = self._event
        if event is not None:
            event.set()


def _wake(waiter: t.Any) -> None:
    """Switch to a parked gevent waiter from its hub's next loop turn; from
    another thread's hub or a native thread, through the thread-safe path."""
    hub = waiter.hub
    loop = hub.loop
    if loop is None:
        return  # its hub was destroyed
    if _hub_if_exists() is hub:
        loop.run_callback(waiter.switch, None)
    else:
        loop.run_callback_threadsafe(waiter.switch, None)


_hub_module: t.Any = None


def _gevent_hub() -> t.Any:
    """``gevent.hub`` (imported once, on first use under gevent)."""
    global _hub_module
    if _hub_module is None:
        import gevent.hub

        _hub_module = gevent.hub
    return _hub_module


_get_hub_if_exists: t.Any = None


def _hub_if_exists() -> t.Any:
    """This thread's gevent hub, without making one."""
    global _get_hub_if_exists
    if _get_hub_if_exists is None:
        from gevent._hub_local import get_hub_if_exists

        _get_hub_if_exists = get_hub_if_exists
    return _get_hub_if_exists()
