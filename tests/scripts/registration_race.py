"""Registration races of the Redis broker, in threads or (``gevent``) in
greenlets: run by tests/test_redis.py as ``python registration_race.py URL
MODE``; prints one JSON line of results.

1. "add": the first subscriber of a channel is held inside its registration
   (the channel's reader position not set yet) while a second subscriber
   resumes from id 0 and an event is published. The second must get e1, e2,
   e3 (history, then live), not e1 and e3.
2. "remove": the last subscriber of a channel is held inside its removal
   while a new subscriber of that channel arrives. The new one must get the
   event published after both are done.
"""

import json
import sys

if sys.argv[2] == "gevent":
    from gevent import monkey

    monkey.patch_all()

import threading

from taken import take_until

from flask_evstream.brokers.redis import RedisBroker
from flask_evstream.channels import Subscription

URL = sys.argv[1]


class Held(RedisBroker):
    """Holds the first call of channels_added or channels_removed at a gate."""

    hold: str = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.history_read = threading.Event()

    def _held(self, what):
        if self.hold == what:
            self.hold = ""
            self.entered.set()
            self.gate.wait(10)

    def channels_added(self, channels):
        self._held("add")
        super().channels_added(channels)

    def channels_removed(self, channels):
        self._held("remove")
        super().channels_removed(channels)

    def history(self, channels, after):
        try:
            return super().history(channels, after)
        finally:
            self.history_read.set()


def subscription(broker, channel, after):
    sub = Subscription(
        broker,
        (channel,),
        after=after,
        last_event_id=None if after is None else str(after),
        queue_size=100,
    )
    sub.wait_started(1)
    return sub


def ids(sub, until):
    """The ids the subscription yields, until ``until`` or 5 s, and whether
    the gap event came."""
    got, found = take_until(sub, until)
    return found, b"evstream-gap" in got


def run(target):
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def race_add(prefix):
    broker = Held(URL, history=100, prefix=prefix)
    publisher = RedisBroker(URL, history=100, prefix=prefix)
    e1 = publisher.publish("ch", "e1", event=None, id=None)
    first, second = [], []
    broker.hold = "add"
    a = run(lambda: first.append(subscription(broker, "ch", None)))
    assert broker.entered.wait(10)
    b = run(lambda: second.append(subscription(broker, "ch", 0)))
    # Unfixed, the second reads its history at once; fixed, it waits for
    # the first registration (then this wait times out).
    broker.history_read.wait(0.5)
    e2 = publisher.publish("ch", "e2", event=None, id=None)
    broker.gate.set()
    a.join(10)
    b.join(10)
    e3 = publisher.publish("ch", "e3", event=None, id=None)
    got, gap = ids(second[0], e3)
    result = {"expected": [e1, e2, e3], "got": got, "gap": gap}
    first[0].close()
    second[0].close()
    broker.close()
    publisher.close()
    return result


def race_remove(prefix):
    broker = Held(URL, history=100, prefix=prefix)
    publisher = RedisBroker(URL, history=100, prefix=prefix)
    old = subscription(broker, "ch", None)
    broker.hold = "remove"
    a = run(old.close)
    assert broker.entered.wait(10)
    new = []
    b = run(lambda: new.append(subscription(broker, "ch", None)))
    b.join(0.5)  # unfixed, it registers at once; fixed, it waits for the removal
    broker.gate.set()
    a.join(10)
    b.join(10)
    e = publisher.publish("ch", "after", event=None, id=None)
    got, gap = ids(new[0], e)
    result = {"expected": [e], "got": got, "gap": gap, "subscribers": broker.hub.count()}
    new[0].close()
    broker.close()
    publisher.close()
    return result


print(
    json.dumps({"add": race_add(f"add-{sys.argv[2]}"), "remove": race_remove(f"rm-{sys.argv[2]}")})
)
