"""The Redis broker against a real redis-server on loopback.

Ids, history and gaps give the memory broker's answers; the per-process
reader delivers live events with no gap and no duplicate; the number of
connections does not grow with subscribers; Redis killed with SIGKILL and
restarted loses nothing a live subscription should get.
"""

from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
import redis

from flask_evstream import GAP_EVENT
from flask_evstream.brokers.hub import Subscriber
from flask_evstream.brokers.memory import MemoryBroker
from flask_evstream.brokers.redis import BLOCK_MS, RedisBroker
from flask_evstream.channels import Subscription
from flask_evstream.event import Event

from .redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER), reason="redis-server is not installed"
)

ROOT = Path(__file__).resolve().parent.parent

C = t.TypeVar("C")


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    """The module's server, emptied."""
    redis_server.admin.flushall()
    return redis_server


@pytest.fixture
def restartable(tmp_path: Path) -> t.Iterator[RedisServer]:
    """A server of the test's own, to kill -9 and start again (same port and dir)."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def cleanup() -> t.Iterator[t.Callable[[C], C]]:
    """Register something with a ``close()`` to close at teardown."""
    items: list[t.Any] = []

    def add(item: C) -> C:
        items.append(item)
        return item

    yield add
    for item in reversed(items):
        item.close()


@pytest.fixture
def make_broker(
    server: RedisServer, cleanup: t.Callable[[RedisBroker], RedisBroker]
) -> t.Callable[..., RedisBroker]:
    def make(history: int = 100, **kwargs: t.Any) -> RedisBroker:
        return cleanup(RedisBroker(server.url, history=history, **kwargs))

    return make


def subscribe(
    broker: t.Any, channels: t.Sequence[str], after: int | None = None, queue_size: int = 10_000
) -> Subscription:
    """A subscription registered, with its history read, in this thread."""
    sub = Subscription(
        broker,
        tuple(channels),
        after=after,
        last_event_id=None if after is None else str(after),
        queue_size=queue_size,
    )
    sub.wait_started(1)
    return sub


class Consumer:
    """Iterates a subscription in a thread, as a stream would."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.events: list[Event] = []
        self.ended = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for event in self.sub:
            self.events.append(event)
        self.ended = True

    def wait(self, n: int, timeout: float = 10) -> list[Event]:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and not self.ended and time.monotonic() < deadline:
            time.sleep(0.002)
        return list(self.events)

    def wait_id(self, last: int, timeout: float = 10) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended:
            if self.events and int(self.events[-1].id or 0) >= last:
                break
            time.sleep(0.002)
        return self.ids()

    def ids(self) -> list[int]:
        return [int(e.id) for e in list(self.events) if e.id is not None]

    def close(self) -> None:
        self.sub.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


def pub(broker: t.Any, channel: str, data: str = "x", event: str | None = None) -> int:
    return int(broker.publish(channel, data, event=event, id=None))


# -- ids and history --------------------------------------------------------


def test_ids_increase_across_channels_and_brokers(make_broker: t.Any) -> None:
    one, two = make_broker(), make_broker()
    assert [pub(one, c) for c in "abcab"] == [1, 2, 3, 4, 5]
    # Another process (broker) shares the counter.
    assert pub(two, "z") == 6
    assert pub(one, "a") == 7


def test_history_replays_after_an_id(make_broker: t.Any) -> None:
    broker = make_broker(history=100)
    for i in range(1, 11):
        broker.publish("a", f"m{i}\nsecond line é", event="tick" if i % 2 else None, id=None)
    pub(broker, "b")
    events, gap = broker.history(["a"], 4)
    assert gap == []
    assert [n for n, _ in events] == [5, 6, 7, 8, 9, 10]
    assert events[0][1] == Event("m5\nsecond line é", event="tick", id="5")
    assert events[1][1] == Event("m6\nsecond line é", id="6")
    assert events[0][1].encode() == b"event: tick\nid: 5\ndata: m5\ndata: second line \xc3\xa9\n\n"
    assert broker.history(["a"], None) == ([], [])
    assert broker.history(["a"], 10) == ([], [])
    assert broker.history(["never"], 0) == ([], [])
    assert [n for n, _ in broker.history(["a"], 0)[0]] == list(range(1, 11))


def test_multi_channel_replay_is_in_id_order(make_broker: t.Any) -> None:
    broker = make_broker()
    for c in "abcabcabc":
        pub(broker, c, data=c)
    events, gap = broker.history(["c", "a"], 1)
    assert gap == []
    assert [(n, e.data) for n, e in events] == [(3, "c"), (4, "a"), (6, "c"), (7, "a"), (9, "c")]


def test_gap_when_history_is_trimmed(make_broker: t.Any, server: RedisServer) -> None:
    broker = make_broker(history=3)
    for _ in range(50):
        pub(broker, "a")
    pub(broker, "b")
    events, gap = broker.history(["a", "b"], 1)
    assert gap == ["a"]
    # One replay holds at most `history` events in all, the newest.
    assert [n for n, _ in events] == [49, 50, 51]
    # A channel that loses events to that bound (not to trimming) has a gap too.
    pub(broker, "b")
    pub(broker, "b")
    events, gap = broker.history(["a", "b"], 49)
    assert [n for n, _ in events] == [51, 52, 53] and gap == ["a"]
    events, gap = broker.history(["b", "a"], 48)
    assert [n for n, _ in events] == [51, 52, 53] and gap == ["a"]
    events, gap = broker.history(["b"], 48)
    assert [n for n, _ in events] == [51, 52, 53] and gap == []
    assert broker.history(["a"], 47) == ([(n, Event("x", id=str(n))) for n in (48, 49, 50)], [])
    assert broker.history(["a"], 46)[1] == ["a"]  # 47 is no longer kept
    assert broker.history(["a"], 50) == ([], [])

    # Trimmed for real in Redis (approximate MAXLEN drops whole nodes).
    small = make_broker(history=3, slack=1, prefix="small")
    for _ in range(500):
        pub(small, "a")
    assert server.admin.xlen("small:ch:a") < 500
    events, gap = small.history(["a"], 1)
    assert gap == ["a"] and [n for n, _ in events] == [498, 499, 500]
    assert small.history(["a"], 497) == ([(n, Event("x", id=str(n))) for n in (498, 499, 500)], [])


@pytest.mark.parametrize(("history", "slack"), [(0, 100), (1, 1), (3, 100), (20, 1), (150, 1)])
def test_same_answers_as_the_memory_broker(make_broker: t.Any, history: int, slack: int) -> None:
    rng = random.Random(history * 1000 + slack)
    memory = MemoryBroker(history=history)
    broker = make_broker(history=history, slack=slack)
    channels = ["a", "b", "c", "ü: x y"]
    last = 0
    for i in range(400):
        channel = rng.choice(channels)
        data = rng.choice(["x", "", "multi\nline\r\nend", '{"k":1}', "é😀"])
        event = rng.choice([None, "", "kind"])
        explicit = last + rng.randint(1, 3) if i % 37 == 0 else None
        last = broker.publish(channel, data, event=event, id=explicit)
        assert memory.publish(channel, data, event=event, id=explicit) == last
    afters = [None, *range(0, last + 2, 7), last - 1, last]
    combos = [["a"], ["b", "c"], channels, ["never", "a"]]
    for after in afters:
        for combo in combos:
            assert broker.history(combo, after) == memory.history(combo, after), (after, combo)


def test_explicit_ids(make_broker: t.Any) -> None:
    broker = make_broker()
    memory = MemoryBroker(history=10)
    for b in (broker, memory):
        assert b.publish("a", "x", event=None, id=10) == 10
        assert b.publish("b", "x", event=None, id=None) == 11
    for bad in (11, 5, 0):
        messages = []
        for b in (broker, memory):
            with pytest.raises(ValueError) as info:
                b.publish("a", "x", event=None, id=bad)
            messages.append(str(info.value))
        assert messages[0] == messages[1]
        assert messages[0] == f"publish id must be higher than the last id 11, got {bad}"
    # A bad event type is refused before anything is stored.
    with pytest.raises(ValueError, match="must not contain CR or LF"):
        broker.publish("a", "x", event="bad\nevent", id=None)
    assert pub(broker, "a") == 12
    # 18 digits stay exact (Lua numbers are doubles).
    big = 10**18 - 3
    assert broker.publish("a", "x", event=None, id=big) == big
    assert pub(broker, "a") == big + 1
    with pytest.raises(ValueError, match=re.escape(f"last id {big + 1}, got {big}")):
        broker.publish("a", "x", event=None, id=big)
    events, _ = broker.history(["a"], big - 1)
    assert [(n, e.id) for n, e in events] == [(big, str(big)), (big + 1, str(big + 1))]


# -- live delivery ------------------------------------------------------------


def test_live_delivery(make_broker: t.Any, cleanup: t.Any) -> None:
    broker = make_broker()
    first = cleanup(Consumer(subscribe(broker, ["a", "b"])))
    for i in range(20):
        broker.publish("ab"[i % 2], str(i), event=None, id=None)
    pub(broker, "other")
    assert [e.data for e in first.wait(20)] == [str(i) for i in range(20)]
    assert first.ids() == list(range(1, 21))
    assert broker.info()["reader"] == "Thread"

    # A second subscriber of the same channel gets the same Event object:
    # encoded once per process, whatever the number of subscribers.
    second = cleanup(Consumer(subscribe(broker, ["a"])))
    n = pub(broker, "a", data="shared")
    assert first.wait_id(n)[-1] == n and second.wait_id(n) == [n]
    assert second.events[0] is first.events[-1]
    assert second.events[0] == Event("shared", id=str(n))
    time.sleep(0.05)
    assert len(first.events) == 21 and len(second.events) == 1  # once each


def test_replay_then_live(make_broker: t.Any, cleanup: t.Any) -> None:
    broker = make_broker(history=5)
    for _ in range(10):
        pub(broker, "a")
    consumer = cleanup(Consumer(subscribe(broker, ["a"], after=7)))
    n = pub(broker, "a")
    assert consumer.wait_id(n) == [8, 9, 10, 11]
    old = cleanup(Consumer(subscribe(broker, ["a"], after=2)))
    events = old.wait(6)
    assert events[0].event == "evstream-gap" and events[0].id is None
    assert old.ids() == [7, 8, 9, 10, 11]


def test_a_new_channel_wakes_the_blocked_reader(make_broker: t.Any, cleanup: t.Any) -> None:
    broker = make_broker()
    first = cleanup(Consumer(subscribe(broker, ["a"])))
    assert first.wait_id(pub(broker, "a"))
    for i in range(15):
        time.sleep(0.01 * (i % 3))  # the reader is blocked in XREAD, or about to be
        consumer = cleanup(Consumer(subscribe(broker, [f"new{i}"])))
        began = time.monotonic()
        n = pub(broker, f"new{i}")
        assert consumer.wait_id(n, timeout=BLOCK_MS / 1000) == [n]
        assert time.monotonic() - began < 1, "the reader waited for its BLOCK timeout"


def test_removed_channel_is_no_longer_read(make_broker: t.Any, cleanup: t.Any) -> None:
    broker = make_broker()
    consumer = Consumer(subscribe(broker, ["a"]))
    assert consumer.wait_id(pub(broker, "a")) == [1]
    consumer.close()
    assert broker.info()["channels"] == 0
    pub(broker, "a")
    # Subscribed again: starts at the counter, not at what it read before.
    again = cleanup(Consumer(subscribe(broker, ["a"])))
    n = pub(broker, "a")
    assert again.wait_id(n) == [n]


def test_no_gap_no_duplicate_while_publishing(make_broker: t.Any, cleanup: t.Any) -> None:
    """Subscribe while another process publishes: replay then live, each id
    once and in order, also for a channel new to a reader already busy with
    another channel of the same subscription."""
    shared = make_broker(history=5000)
    publisher = make_broker(history=5000)  # another process
    published: list[tuple[int, str]] = []
    done = threading.Event()
    rounds = 24

    def publish() -> None:
        for i in range(1200):
            channel = "live" if i % 2 else f"o{i // 2 % rounds}"
            published.append((pub(publisher, channel), channel))
            if i % 40 == 0:
                time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    subs: list[tuple[Consumer, int | None, tuple[str, ...]]] = []
    try:
        for k in range(rounds):
            time.sleep(0.005)
            after = published[-1][0] if k % 2 and published else None
            channels = [("live",), (f"o{k}",), ("live", f"o{k}"), (f"o{k}", "live")][k % 4]
            broker = make_broker(history=5000) if k % 5 == 0 else shared  # a fresh process
            subs.append((cleanup(Consumer(subscribe(broker, channels, after))), after, channels))
    finally:
        thread.join(30)
    assert done.is_set()
    final = published[-1][0]
    assert [n for n, _ in published] == list(range(1, final + 1))
    for consumer, after, channels in subs:
        expected = [n for n, c in published if c in channels]
        ids = consumer.wait_id(max(expected))
        if after is not None:
            assert ids == [n for n in expected if n > after], channels
        else:  # live: from some point on, all of them
            assert ids, "received nothing"
            assert ids == expected[expected.index(ids[0]) :], channels


def test_a_channel_added_during_a_read_is_not_overtaken(make_broker: t.Any, cleanup: t.Any) -> None:
    """The reader took its list of channels, then a subscriber of that
    channel and a new one came, and events in both: the old channel's must
    not be delivered before the new channel's older ones."""
    broker = make_broker()
    first = cleanup(Consumer(subscribe(broker, ["old"])))
    assert first.wait_id(pub(broker, "old")) == [1]
    client = broker._reader_client
    real_xread = client.xread
    armed, paused, gate = threading.Event(), threading.Event(), threading.Event()

    def xread(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if armed.is_set():  # between the list of channels and the XREAD
            armed.clear()
            paused.set()
            gate.wait(10)
        return real_xread(*args, **kwargs)

    client.xread = xread
    armed.set()
    assert first.wait_id(pub(broker, "old")) == [1, 2]
    assert paused.wait(5)
    both = cleanup(Consumer(subscribe(broker, ["old", "new"], after=2)))
    new, old = pub(broker, "new"), pub(broker, "old")
    gate.set()
    assert both.wait_id(old) == [new, old]
    assert first.wait_id(old) == [1, 2, old]


def test_connections_do_not_grow_with_subscribers(make_broker: t.Any, server: RedisServer) -> None:
    broker = make_broker(prefix="conns")
    subscribers = [Subscriber((f"ch{i % 50}",), 100) for i in range(500)]

    def register(part: list[Subscriber]) -> None:
        for subscriber in part:
            broker.hub_add(subscriber)

    threads = [threading.Thread(target=register, args=(subscribers[i::10],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert broker.hub.count() == 500 and broker.info()["channels"] == 50

    def publish(part: range) -> None:
        for i in part:
            pub(broker, f"ch{i}", data=str(i))

    threads = [threading.Thread(target=publish, args=(range(i, 50, 10),)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for i, subscriber in enumerate(subscribers):
        got: list[tuple[int, Event]] = []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            got = subscriber.get(0.1) or []
        assert [e.data for _, e in got] == [str(i % 50)]

    clients = server.clients("conns")
    assert [c["name"] for c in clients].count("conns-reader") == 1
    assert len(clients) <= 5, clients  # the reader + a pool of at most 4
    for subscriber in subscribers:
        broker.hub_remove(subscriber)
    assert broker.info()["channels"] == 0
    broker.close()
    deadline = time.monotonic() + 5
    while server.clients("conns") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.clients("conns") == []
    assert not broker._reader.is_alive()


def test_a_reader_that_fell_behind_cuts_its_subscribers_off(
    make_broker: t.Any, cleanup: t.Any, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(history=0, slack=1)
    held = threading.Event()
    release = threading.Event()
    deliver = broker.hub.deliver

    def slow_deliver(channel: str, n: int, event: Event) -> None:
        if n == 1:
            held.set()
            release.wait(10)
        deliver(channel, n, event)

    broker.hub.deliver = slow_deliver
    consumer = cleanup(Consumer(subscribe(broker, ["a"])))
    pub(broker, "a")
    assert held.wait(5)
    for _ in range(400):  # trims (whole nodes) what the reader has not read
        pub(broker, "a")
    assert server.admin.xlen("evstream:ch:a") < 400
    release.set()
    deadline = time.monotonic() + 5
    while not consumer.ended and time.monotonic() < deadline:
        time.sleep(0.01)
    # Cut off; event 1 too unless the consumer took it first.
    assert consumer.ended and consumer.ids() in ([], [1])
    assert "fell behind" in caplog.text
    # The client reconnects with its Last-Event-ID: a gap, then live again.
    assert broker.history(["a"], 1) == ([], ["a"])


# -- Redis going away -----------------------------------------------------------


def test_redis_killed_and_restarted_mid_stream(
    restartable: RedisServer, cleanup: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_evstream.redis")
    broker = cleanup(RedisBroker(restartable.url, history=100))
    consumer = cleanup(Consumer(subscribe(broker, ["k", "j"])))
    ids = [pub(broker, "kj"[i % 2], data=f"before{i}") for i in range(5)]
    assert consumer.wait_id(ids[-1]) == ids
    ids += [pub(broker, "k", data=f"at-kill{i}") for i in range(3)]  # maybe not read yet

    restartable.kill()
    with pytest.raises(redis.ConnectionError):
        pub(broker, "k", data="lost")
    with pytest.raises(redis.ConnectionError):
        broker.history(["k"], 0)
    # Subscribing during the outage (no Last-Event-ID): registered, live
    # later, from the last id this process saw.
    during = cleanup(Consumer(subscribe(broker, ["d"])))
    time.sleep(0.4)  # the reader retries meanwhile
    assert not broker.info()["connected"]

    restartable.start()
    # Published at once, while the reader still backs off: it reads them when back.
    for _ in range(200):  # a publisher retries
        try:
            ids.append(pub(broker, "j", data="after0"))
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    ids += [pub(broker, "kj"[i % 2], data=f"after{i}") for i in range(1, 6)]
    assert ids == list(range(1, 15)), "the counter survived the restart"
    assert consumer.wait_id(ids[-1]) == ids  # in order, exactly once
    assert consumer.events[5].data == "at-kill0" and not consumer.ended

    n = pub(broker, "d")
    assert during.wait_id(n) == [n]
    assert broker.info()["reconnects"] == 1
    lost = [r for r in caplog.records if r.getMessage().startswith("Lost Redis")]
    assert len(lost) == 1, "logged once per outage"
    assert [n for n, _ in broker.history(["k", "j"], 0)[0]] == ids


def test_counter_going_back_is_logged(
    make_broker: t.Any, server: RedisServer, cleanup: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    consumer = cleanup(Consumer(subscribe(broker, ["a"])))
    for _ in range(5):
        pub(broker, "a")
    assert consumer.wait_id(5) == [1, 2, 3, 4, 5]
    server.admin.flushall()  # as a restart without persistence would
    server.admin.client_kill_filter(_type="normal", skipme=True)
    deadline = time.monotonic() + 10
    while "went back" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "went back from 5 to 0" in caplog.text


def test_the_reader_is_a_greenlet_under_gevent(server: RedisServer) -> None:
    script = f"""
from gevent import monkey
monkey.patch_all()
import gevent
from flask_evstream.brokers.redis import RedisBroker
from flask_evstream.channels import Subscription

broker = RedisBroker({server.url!r}, history=10, prefix="gevent")
got = []

def consume(channel):
    sub = Subscription(broker, (channel,), after=None, last_event_id=None, queue_size=100)
    sub.wait_started(1)
    for event in sub:
        got.append((channel, event.id))
        if event.data == "last":
            break
    sub.close()

first = gevent.spawn(consume, "g1")
gevent.sleep(0.2)
broker.publish("g1", "x", event=None, id=None)
gevent.sleep(0.2)
second = gevent.spawn(consume, "g2")  # wakes the blocked reader
gevent.sleep(0.2)
broker.publish("g2", "last", event=None, id=None)
broker.publish("g1", "last", event=None, id=None)
gevent.joinall([first, second], timeout=3)
print(type(broker._reader).__name__, sorted(got))
broker.close()
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Greenlet [('g1', '1'), ('g1', '3'), ('g2', '2')]"


def script_result(name: str, *args: str) -> t.Any:
    """Run ``tests/scripts/NAME ARGS...``; the JSON of its last line."""
    import json

    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_registration_races(server: RedisServer, mode: str) -> None:
    """A second subscriber never reads its history before the first one's
    channel is set up in the reader, and a channel being removed is not
    removed under a new subscriber (tests/scripts/registration_race.py)."""
    races = script_result("registration_race.py", server.url, mode)
    add, remove = races["add"], races["remove"]
    assert add["got"] == add["expected"] and not add["gap"], add
    assert remove["got"] == remove["expected"] and remove["subscribers"] == 1, remove


@pytest.mark.parametrize("mode", ["threads", "gevent"])
@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_registrations_that_wait_share_one_channels_added(
    server: RedisServer, broker: str, mode: str
) -> None:
    """Subscribers that arrive while a registration runs are registered
    together, with one ``channels_added``, and none returns before it is
    done; each then gets every event of its channels once. A failed batch
    fails its caller only, even when its cleanup fails too, and a greenlet
    killed while it waits, while its batch runs or after, leaves nothing
    behind (tests/scripts/registration_batch.py)."""
    url = "memory://" if broker == "memory" else server.url
    got = script_result("registration_batch.py", url, mode)
    empty = {"subscribers": 0, "channels": []}

    batch = got["batch"]
    assert batch["calls"] == [["a"], ["b", "c", "d"]], batch
    assert batch["returned_while_held"] == [], batch
    assert batch["hub"] == {"subscribers": 5, "channels": ["a", "b", "c", "d"]}, batch
    before, during, ids = batch["before"], batch["during"], batch["published"]
    assert batch["got"] == {
        "a": [before, ids["a"]],
        "b": [during["b"], ids["b"]],
        "b again": [during["b"], ids["b"]],
        "c": [during["c"], ids["c"]],
        "d+a": [before, during["d"], ids["a"], ids["d"]],
    }, batch
    assert batch["after_close"] == empty, batch

    for name, error in [
        ("failure", "channels_added failed"),
        ("failure in cleanup", "channels_removed failed"),
    ]:
        failure = got[name]
        calls, errors = failure["calls"], failure["errors"]
        assert calls[:2] == [["a"], ["b", "c", "d"]] and len(calls) == 3, failure
        assert list(errors.values()) == [f"RuntimeError('{error}')"], failure
        (failed,) = errors
        rest = sorted(set("bcd") - {failed})
        assert calls[2] == rest, failure
        assert failure["hub"] == {"subscribers": 3, "channels": sorted(["a", *rest])}, failure
        ids = failure["published"]
        assert failure["got"] == {name: [ids[name]] for name in ["a", *rest]}, failure
        assert failure["after_close"] == empty, failure

    if mode == "gevent":
        cancel = got["cancel"]
        leader, taken, done = cancel["leader"], cancel["taken"], cancel["done"]
        assert cancel["calls"] == [["a"], ["b", "c", "e"]], cancel
        assert cancel["removed"] == [[taken], [done]], cancel
        assert cancel["registered"] == ["a", leader], cancel
        assert cancel["hub"] == {"subscribers": 2, "channels": ["a", leader]}, cancel
        assert cancel["queue"] == 0, cancel
        assert cancel["after_close"] == empty, cancel


def test_a_foreign_key_under_the_prefix_darkens_its_channel_only(
    make_broker: t.Any, server: RedisServer, cleanup: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program wrote a plain string where a channel's stream would
    be: that channel fails alone (logged once); the others keep going."""
    caplog.set_level(logging.INFO, logger="flask_evstream.redis")
    server.admin.set("evstream:ch:bad", "not a stream")
    broker = make_broker()
    bad = cleanup(Consumer(subscribe(broker, ["bad"], after=0)))
    good = cleanup(Consumer(subscribe(broker, ["good"])))
    both = cleanup(Consumer(subscribe(broker, ["good", "bad"])))
    ids = [pub(broker, "good", data=f"g{i}") for i in range(3)]
    assert good.wait_id(ids[-1]) == ids
    assert both.wait_id(ids[-1]) == ids
    assert [e.event for e in bad.wait(1, timeout=0.5)] == [GAP_EVENT]  # no history for it
    with pytest.raises(RuntimeError, match="'evstream:ch:bad' exists and is not a stream"):
        pub(broker, "bad")
    ids.append(pub(broker, "good", data="g3"))
    assert good.wait_id(ids[-1]) == ids
    errors = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert "'evstream:ch:bad' holds a string, not a stream" in errors[0].getMessage()
    assert broker.info()["connected"]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_channels_nobody_publishes_to_expire(
    kind: str, server: RedisServer, cleanup: t.Any
) -> None:
    """With a channel TTL, the history of a channel left alone goes away
    (Redis keys expire; the memory broker frees its ring); a client whose
    position the expired history may have held gets the gap event, and a
    client that is up to date does not."""
    broker: t.Any
    if kind == "memory":
        broker = MemoryBroker(history=10, channel_ttl=1.0)

        def exists(channel: str) -> bool:
            return channel in broker._events  # the ring itself: was it freed?
    else:
        broker = cleanup(RedisBroker(server.url, history=10, channel_ttl=1.0, clock_interval=0.05))

        def exists(channel: str) -> bool:
            return bool(server.admin.exists(f"evstream:ch:{channel}"))

    assert [pub(broker, "old", data=f"o{i}") for i in range(3)] == [1, 2, 3]
    # Younger than the TTL: nothing can have expired, so no gap from the start.
    assert [n for n, _ in broker.history(["old"], 0)[0]] == [1, 2, 3]
    assert broker.history(["old"], 0)[1] == []
    assert [n for n, _ in broker.history(["old"], 1)[0]] == [2, 3]
    assert broker.history(["old"], 1)[1] == []
    assert broker.history(["never"], 3) == ([], [])
    deadline = time.monotonic() + 15
    latest = 3
    while exists("old") and time.monotonic() < deadline:
        latest = pub(broker, "other")  # time goes on elsewhere
        time.sleep(0.05)
    assert not exists("old"), "the channel's history was not freed"
    assert exists("other")
    # A client at 1 missed 2 and 3, which expired: a gap.
    assert broker.history(["old"], 1) == ([], ["old"])
    # Up to date: no gap, on the expired channel and on one never published.
    assert broker.history(["old"], latest) == ([], [])
    assert broker.history(["never"], latest) == ([], [])
    # The channel starts again: its new history does not hide the expired one.
    again = pub(broker, "old", data="again")
    events, gap = broker.history(["old"], 1)
    assert [n for n, _ in events] == [again] and gap == ["old"]
    assert broker.history(["old"], latest)[1] == []
    assert [n for n, _ in broker.history(["old"], latest)[0]] == [again]


def test_channel_ttl_setting() -> None:
    from flask_evstream.extension import Settings

    assert Settings.from_config({}).channel_ttl == 86400.0
    assert Settings.from_config({"EVSTREAM_CHANNEL_TTL": 0}).channel_ttl is None
    assert Settings.from_config({"EVSTREAM_CHANNEL_TTL": None}).channel_ttl is None
    assert Settings.from_config({"EVSTREAM_CHANNEL_TTL": 30}).channel_ttl == 30.0
    for bad in (-1, float("nan"), "1d", True, 10**9):
        with pytest.raises(ValueError, match="EVSTREAM_CHANNEL_TTL must be a number of seconds"):
            Settings.from_config({"EVSTREAM_CHANNEL_TTL": bad})


def test_two_prefixes_share_one_redis_database(server: RedisServer, cleanup: t.Any) -> None:
    one = cleanup(RedisBroker(server.url, history=10, prefix="app1"))
    two = cleanup(RedisBroker(server.url, history=10, prefix="app2"))
    listener = cleanup(Consumer(subscribe(two, ["news"])))
    assert [pub(one, "news", data=f"one{i}") for i in range(3)] == [1, 2, 3]
    assert pub(two, "news", data="two") == 1  # its own counter
    assert listener.wait_id(1) == [1]
    assert [e.data for e in listener.events] == ["two"]
    assert [e.data for _, e in two.history(["news"], 0)[0]] == ["two"]
    assert len(one.history(["news"], 0)[0]) == 3
    assert sorted(server.admin.keys("app1:*")) == ["app1:ch:news", "app1:id"]  # no TTL: no clock


def test_publish_many_is_publish_in_order(make_broker: t.Callable[..., RedisBroker]) -> None:
    broker = make_broker(history=2000)
    live = Consumer(subscribe(broker, ["batch"]))
    first = broker.publish("batch", "before", event=None, id=None)
    items = [(f"e{i}", None if i % 3 else "kind") for i in range(1200)]  # three script calls
    ids = broker.publish_many("batch", items)
    assert ids == list(range(first + 1, first + 1201))
    events, gap = broker.history(["batch"], first)
    assert [(n, e.data, e.event) for n, e in events] == [
        (n, data, kind) for n, (data, kind) in zip(ids, items)
    ]
    assert gap == []
    assert live.wait_id(ids[-1]) == [first, *ids]
    live.close()
