"""Batched registrations, in threads or (``gevent``) in greenlets, with the
memory broker or Redis: run by the tests as ``python registration_batch.py
URL MODE``; prints one JSON line of results.

Each state is reached by lockstep (the queue's length, a held call's
``entered`` event, the registration lock held by the script), never by
sleeping.

1. "batch": four subscribers queue up (three new channels, one the first
   subscriber has; each resumes from id 0). The next registration takes all
   four: one ``channels_added`` with the three new channels, held while
   events are published. No subscriber returns before that call is done,
   and each gets every event of its channels once: history, events
   published during the held call, then live.
2. "failure": the batch's ``channels_added`` raises. Only the caller that
   ran it fails; the others register in the call after, and get events.
   "failure in cleanup": the same, and the ``channels_removed`` of its
   cleanup raises too; the others still register.
3. "cancel" (gevent only): greenlets killed while their registration waits
   in the queue, while a held batch registers it, and after the batch has
   registered it but before it returned. None is left in the hub.
"""

import json
import sys

if sys.argv[2] == "gevent":
    from gevent import monkey

    monkey.patch_all()

import threading
import time

from taken import take_until

from flask_evstream.brokers.memory import MemoryBroker
from flask_evstream.brokers.redis import RedisBroker
from flask_evstream.channels import Subscription

URL, MODE = sys.argv[1], sys.argv[2]
Base = MemoryBroker if URL.startswith("memory:") else RedisBroker


class Gated(Base):
    """Records every channels_added and channels_removed; holds the
    channels_added numbered ``hold`` at ``gate`` and the channels_removed
    numbered ``hold_removed`` at ``removed_gate``; makes the channels_added
    numbered ``fail`` and the channels_removed numbered ``fail_removed``
    raise."""

    def __init__(self, prefix, hold=None, fail=None, hold_removed=None, fail_removed=None):
        if Base is RedisBroker:
            super().__init__(URL, history=10, prefix=prefix)
        else:
            super().__init__(history=10)
        self.calls = []
        self.removed = []
        self.hold, self.fail = hold, fail
        self.hold_removed, self.fail_removed = hold_removed, fail_removed
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.removed_entered = threading.Event()
        self.removed_gate = threading.Event()

    def channels_added(self, channels):
        self.calls.append(sorted(channels))
        if len(self.calls) == self.hold:
            self.entered.set()
            assert self.gate.wait(10), "the gate was not opened"
        if len(self.calls) == self.fail:
            raise RuntimeError("channels_added failed")
        super().channels_added(channels)

    def channels_removed(self, channels):
        self.removed.append(sorted(channels))
        if len(self.removed) == self.hold_removed:
            self.removed_entered.set()
            assert self.removed_gate.wait(10), "the gate was not opened"
        if len(self.removed) == self.fail_removed:
            raise RuntimeError("channels_removed failed")
        super().channels_removed(channels)


def until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {what}"
        time.sleep(0.001)


def subscribe(broker, name, channels, out, after=None):
    """Open a subscription as ``out[name]`` (live, or resuming after id
    ``after``), or its error's repr."""
    try:
        sub = Subscription(
            broker,
            channels,
            after=after,
            last_event_id=None if after is None else str(after),
            queue_size=100,
        )
        sub.wait_started(1)
        out[name] = sub
    except Exception as e:
        out[name] = repr(e)


def run(target, *args):
    thread = threading.Thread(target=target, args=args)
    thread.start()
    return thread


def ids(sub, until_id):
    """The ids the subscription yields, until ``until_id`` or 5 s."""
    return take_until(sub, until_id)[1]


def hub_state(broker):
    return {"subscribers": broker.hub.count(), "channels": sorted(broker.hub._subscribers)}


def deliveries(publisher, subs, channels):
    """Publish once on each channel; the ids each open subscription got
    (one event per channel it has), by name."""
    published = {
        channel: publisher.publish(channel, "x", event=None, id=None) for channel in channels
    }
    got = {
        name: ids(sub, max(published[channel] for channel in sub.channels))
        for name, sub in sorted(subs.items())
        if not isinstance(sub, str)
    }
    return published, got


def close_all(broker, publisher, subs):
    for sub in subs.values():
        if not isinstance(sub, str):
            sub.close()
    state = hub_state(broker)
    broker.close()
    if publisher is not broker:
        publisher.close()
    return state


def pair(name, **gates):
    broker = Gated(f"batch-{name}-{MODE}", **gates)
    publisher = (
        broker if Base is MemoryBroker else RedisBroker(URL, history=10, prefix=broker.prefix)
    )
    return broker, publisher


def queue_behind(broker, subs, followers, after=None):
    """Start each follower and wait until it is queued."""
    threads = []
    for i, (name, channels) in enumerate(followers):
        threads.append(run(subscribe, broker, name, channels, subs, after))
        until(lambda n=i + 1: len(broker._queue) == n, f"{i + 1} registrations queued")
    return threads


def scenario_batch():
    broker, publisher = pair("batch", hold=2)
    subs = {}
    subscribe(broker, "a", ("a",), subs)  # the first call, not held
    before = publisher.publish("a", "x", event=None, id=None)
    followers = [("b", ("b",)), ("c", ("c",)), ("d+a", ("d", "a")), ("b again", ("b",))]
    with broker._registration_lock():  # they queue up behind it
        threads = queue_behind(broker, subs, followers, after=0)
    assert broker.entered.wait(10)  # the batch's channels_added, held
    during = {channel: publisher.publish(channel, "x", event=None, id=None) for channel in "bcd"}
    returned = sorted(set(subs) - {"a"})  # before the held call is done: none
    broker.gate.set()
    for thread in threads:
        thread.join(10)
    result = {
        "calls": list(broker.calls),
        "returned_while_held": returned,
        "hub": hub_state(broker),
        "before": before,
        "during": during,
    }
    result["published"], result["got"] = deliveries(publisher, subs, "abcd")
    result["after_close"] = close_all(broker, publisher, subs)
    return result


def scenario_failure(**gates):
    broker, publisher = pair("failure" + "-cleanup" * bool(gates), hold=1, fail=2, **gates)
    subs = {}
    first = run(subscribe, broker, "a", ("a",), subs)
    assert broker.entered.wait(10)
    threads = queue_behind(broker, subs, [(c, (c,)) for c in "bcd"])
    broker.gate.set()
    for thread in [first, *threads]:
        thread.join(10)
    result = {
        "calls": list(broker.calls),
        "errors": {name: sub for name, sub in sorted(subs.items()) if isinstance(sub, str)},
        "hub": hub_state(broker),
    }
    result["published"], result["got"] = deliveries(publisher, subs, "abcd")
    result["after_close"] = close_all(broker, publisher, subs)
    return result


def inside(greenlet, function):
    """Whether ``greenlet`` is inside a call of ``function`` (by name)."""
    frame = greenlet.gr_frame
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def scenario_cancel():
    import gevent

    broker, publisher = pair("cancel", hold=2, hold_removed=1)
    subs = {}
    subscribe(broker, "a", ("a",), subs)  # the first call, not held
    lock = broker._registration_lock()
    with lock:  # b, c and e queue up behind it
        spawned = {name: gevent.spawn(subscribe, broker, name, (name,), subs) for name in "bce"}
        until(lambda: len(broker._queue) == 3, "b, c and e queued")
    assert broker.entered.wait(10)  # the second call: the batch [b, c, e], held
    (leader,) = [name for name, g in spawned.items() if inside(g, "channels_added")]
    taken, done = sorted(set("bce") - {leader})
    d = gevent.spawn(subscribe, broker, "d", ("d",), subs)
    until(lambda: len(broker._queue) == 1, "d queued")
    # Killed while the batch registers it: the batch removes it.
    spawned[taken].kill(block=True, timeout=5)
    d.kill(block=True, timeout=5)  # killed while queued
    broker.gate.set()
    # The batch is done (the taken one's channel is being removed, held):
    # killed now, the last one removes itself.
    assert broker.removed_entered.wait(10)
    spawned[done].kill(block=False)
    until(lambda: inside(spawned[done], "hub_remove"), f"{done} removing itself")
    broker.removed_gate.set()
    gevent.joinall([spawned[leader], spawned[done]], timeout=10)
    result = {
        "calls": list(broker.calls),
        "removed": list(broker.removed),
        "leader": leader,
        "taken": taken,
        "done": done,
        "registered": sorted(name for name, sub in subs.items() if not isinstance(sub, str)),
        "hub": hub_state(broker),
        "queue": len(broker._queue),
    }
    result["after_close"] = close_all(broker, publisher, subs)
    return result


results = {
    "batch": scenario_batch(),
    "failure": scenario_failure(),
    "failure in cleanup": scenario_failure(fail_removed=1),
}
if MODE == "gevent":
    results["cancel"] = scenario_cancel()
print(json.dumps(results))
