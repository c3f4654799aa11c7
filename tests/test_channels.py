"""Broadcast channels with the in-memory broker, in process (thread backend)."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from flask import Flask

from flask_evstream import GAP_EVENT, Event, EvStream, Subscription, last_event_id, sse_route
from flask_evstream.testing import iter_events, read_events


@pytest.fixture
def sse_app() -> tuple[Flask, EvStream]:
    app = Flask("channels")
    app.config.update(TESTING=True, EVSTREAM_HEARTBEAT=0.1, EVSTREAM_HISTORY=5)
    sse = EvStream(app)

    @app.get("/sub")
    @sse_route()
    def sub() -> Subscription:
        from flask import request

        return sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())

    @app.get("/gen")
    @sse_route()
    def gen() -> t.Iterator[t.Any]:
        from flask import request

        yield from sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())

    return app, sse


def test_publish_ids_increase_across_channels(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    ids = [sse.publish("a", "x"), sse.publish("b", {"y": 1}), sse.publish("a", "z", event="e")]
    assert ids == ["1", "2", "3"]
    assert sse.publish("a", "w", id=10) == "10"
    with pytest.raises(ValueError, match="higher than the last id 10, got 10"):
        sse.publish("a", "w", id=10)
    assert sse.publish("a", "next") == "11"


def test_publish_validates(sse_app: tuple[Flask, EvStream]) -> None:
    _, sse = sse_app
    with pytest.raises(ValueError, match="channel must be 1 to 200 printable characters"):
        sse.publish("", "x")
    with pytest.raises(ValueError, match="channel must be"):
        sse.publish("a\nb", "x")
    with pytest.raises(TypeError, match="channel must be a str"):
        sse.publish(3, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Event event must not contain CR or LF"):
        sse.publish("a", "x", event="a\nb")
    with pytest.raises(TypeError, match="JSON-serializable"):
        sse.publish("a", object())
    with pytest.raises(ValueError, match="publish id must be a positive integer"):
        sse.publish("a", "x", id="abc")
    with pytest.raises(ValueError, match="publish id must be a positive integer"):
        sse.publish("a", "x", id=0)


def test_replay_after_last_event_id_then_live(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    for i in range(4):
        sse.publish("news", {"n": i})
    client = app.test_client()
    response = client.get("/sub?c=news", headers={"Last-Event-ID": "2"}, buffered=False)
    events = iter_events(response)
    assert [next(events) for _ in range(2)] == [
        Event('{"n":2}', id="3"),
        Event('{"n":3}', id="4"),
    ]
    threading.Timer(0.05, sse.publish, ("news", "live")).start()
    assert next(events) == Event("live", id="5")
    response.close()
    assert sse.broker.hub.count() == 0


def test_no_last_event_id_starts_live(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    sse.publish("news", "old")
    response = app.test_client().get("/sub?c=news", buffered=False)
    events = iter_events(response)
    threading.Timer(0.05, sse.publish, ("news", "new")).start()
    assert next(events).data == "new"
    response.close()


def test_gap_when_history_no_longer_reaches(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    for i in range(10):  # history keeps 5: ids 6..10
        sse.publish("news", str(i))
    response = app.test_client().get("/sub?c=news", headers={"Last-Event-ID": "3"}, buffered=False)
    events = iter_events(response)
    first = next(events)
    assert first.event == GAP_EVENT
    assert first.data == '{"channels":["news"],"last_event_id":"3"}'
    assert [next(events).id for _ in range(5)] == ["6", "7", "8", "9", "10"]
    response.close()
    # From id 5 nothing was lost: no gap.
    response = app.test_client().get("/sub?c=news", headers={"Last-Event-ID": "5"}, buffered=False)
    assert next(iter_events(response)) == Event("5", id="6")
    response.close()


def test_several_channels_in_one_stream_resume(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    sse.publish("a", "a1")
    sse.publish("b", "b1")
    sse.publish("c", "c1")
    sse.publish("a", "a2")
    response = app.test_client().get("/sub?c=a&c=b", headers={"Last-Event-ID": "1"}, buffered=False)
    events = iter_events(response)
    assert [(e.data, e.id) for e in (next(events), next(events))] == [("b1", "2"), ("a2", "4")]
    threading.Timer(0.05, lambda: (sse.publish("c", "c2"), sse.publish("b", "b2"))).start()
    assert (next(events).data, "c2") != ("c2", "c2")  # c is not subscribed
    response.close()


def test_yield_from_subscription_in_a_generator(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    sse.publish("news", "one")
    response = app.test_client().get("/gen?c=news", headers={"Last-Event-ID": "0"}, buffered=False)
    events = iter_events(response)
    assert next(events) == Event("one", id="1")
    threading.Timer(0.05, sse.publish, ("news", "two")).start()
    assert next(events) == Event("two", id="2")
    response.close()
    deadline = time.monotonic() + 5
    while sse.broker.hub.count() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sse.broker.hub.count() == 0


def test_authorize_refuses_with_403(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app

    @sse.authorize
    def may_read(channel: str) -> bool:
        return not channel.startswith("private")

    client = app.test_client()
    assert client.get("/sub?c=private-1").status_code == 403
    assert client.get("/sub?c=news&c=private-2").status_code == 403
    assert client.get("/gen?c=private-1").status_code == 403
    response = client.get("/sub?c=news", buffered=False)
    assert response.status_code == 200
    response.close()
    assert sse.broker.hub.count() == 0


def test_slow_subscriber_is_cut_off_and_others_keep_going() -> None:
    app = Flask("slow")
    app.config["EVSTREAM_QUEUE_SIZE"] = 3
    sse = EvStream(app)
    slow = sse.subscribe("news")
    fast = sse.subscribe("news")
    slow_iter, fast_iter = iter(slow), iter(fast)
    # Start both (register, replay nothing).
    slow.wait_started(0)
    fast.wait_started(0)
    received = []
    for i in range(10):
        sse.publish("news", str(i))
        received.append(next(fast_iter).data)  # fast keeps up
    assert received == [str(i) for i in range(10)]
    # slow never read: its queue of 3 overflowed, so it ends (the client
    # would reconnect and replay from history)
    assert list(slow_iter) == []
    assert sse.broker.hub.count() == 1
    fast.close()
    assert sse.broker.hub.count() == 0


def test_publish_from_a_thread_without_app_context(sse_app: tuple[Flask, EvStream]) -> None:
    app, sse = sse_app
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(sse.publish("news", "bg")))
    thread.start()
    thread.join()
    assert result == ["1"]
    with app.app_context():
        sub = sse.subscribe("news", last_event_id="0")
        assert next(iter(sub)) == Event("bg", id="1")
        sub.close()


def test_two_apps_need_an_app_context() -> None:
    sse = EvStream()
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    sse.init_app(second)
    with pytest.raises(RuntimeError, match="several apps: push an app context"):
        sse.publish("a", "x")
    with first.app_context():
        assert sse.publish("a", "x") == "1"
    with second.app_context():
        assert sse.publish("a", "x") == "1"  # each app has its own broker
    with pytest.raises(RuntimeError, match="Did you forget to call init_app"):
        EvStream().publish("a", "x")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("EVSTREAM_BROKER_URL", "nope", "EVSTREAM_BROKER_URL must be a URL"),
        ("EVSTREAM_BROKER_URL", "kafka://x", "must start with memory://, redis://"),
        (
            "EVSTREAM_HISTORY",
            -1,
            "EVSTREAM_HISTORY must be an integer number of events >= 0, got -1",
        ),
        (
            "EVSTREAM_QUEUE_SIZE",
            0,
            "EVSTREAM_QUEUE_SIZE must be an integer number of events >= 1, got 0",
        ),
    ],
)
def test_channel_config_validated(key: str, value: t.Any, message: str) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(ValueError, match=message):
        EvStream(app)


def test_heartbeats_while_a_returned_subscription_waits(sse_app: tuple[Flask, EvStream]) -> None:
    app, _ = sse_app
    response = app.test_client().get("/sub?c=quiet", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b":\n"
    assert next(chunks) == b": ping\n"
    response.close()


def test_history_zero_always_gaps() -> None:
    app = Flask("h0")
    app.config["EVSTREAM_HISTORY"] = 0
    sse = EvStream(app)
    sse.publish("a", "x")
    with app.app_context():
        sub = sse.subscribe("a", last_event_id="0")
        assert next(iter(sub)).event == GAP_EVENT
        sub.close()
    assert read_events  # the helper module is importable alongside


def test_one_replay_is_bounded_by_the_history_size(sse_app: tuple[Flask, EvStream]) -> None:
    """Three channels with 5 kept events each: a full replay sends the 5
    newest of all, after a gap event naming the channels that lost some."""
    app, sse = sse_app
    ids = [sse.publish(c, f"{c}{i}") for i in range(5) for c in "abc"]
    with app.test_client().get("/sub?c=a&c=b&c=c", headers={"Last-Event-ID": "0"}) as r:
        events = []
        for event in iter_events(r):
            events.append(event)
            if len(events) == 6:
                break
    assert events[0].event == GAP_EVENT
    assert events[0].data == '{"channels":["a","b","c"],"last_event_id":"0"}'
    assert [e.id for e in events[1:]] == ids[-5:]
    assert [e.data for e in events[1:]] == ["b3", "c3", "a4", "b4", "c4"]


def test_a_long_replay_leaves_in_chunks_of_max_buffer() -> None:
    app = Flask("chunks")
    app.config.update(EVSTREAM_HISTORY=300, EVSTREAM_MAX_BUFFER=4096, EVSTREAM_HEARTBEAT=0.1)
    sse = EvStream(app)

    @app.get("/sub")
    @sse_route()
    def sub() -> Subscription:
        return sse.subscribe("big", last_event_id=last_event_id())

    payload = "x" * 1000
    ids = [sse.publish("big", payload) for _ in range(300)]
    response = app.test_client().get("/sub", headers={"Last-Event-ID": "0"})
    body = response.response
    chunks = []
    got = b""
    for chunk in body:
        chunks.append(chunk)
        got += chunk
        if f"id: {ids[-1]}\n".encode() in got:
            break
    response.close()
    # Each write holds at most max_buffer bytes plus the event that crossed it.
    assert max(len(c) for c in chunks) < 4096 + 1100, [len(c) for c in chunks]
    assert len(chunks) >= 300 * 1000 // (4096 + 1100)
    assert got.count(b"data: " + payload.encode() + b"\n\n") == 300


def test_subscription_is_a_context_manager_and_counted(sse_app: tuple[Flask, EvStream]) -> None:
    from flask_evstream import subscribers

    app, sse = sse_app
    before = subscribers()
    with app.app_context():
        sse.publish("cm", "one")
        with sse.subscribe("cm", last_event_id="0") as events:
            assert next(events).data == "one"
            assert subscribers(app) == 1 and subscribers() == before + 1
        assert subscribers(app) == 0 and subscribers() == before
        assert list(events) == []  # closed: it ends


def test_too_many_channels_outside_a_request_is_a_value_error(
    sse_app: tuple[Flask, EvStream],
) -> None:
    app, sse = sse_app
    with app.app_context(), pytest.raises(ValueError, match="at most 32 channels"):
        sse.subscribe([f"c{i}" for i in range(33)])


def test_a_broker_instance_and_several_apps() -> None:
    import gc

    from flask_evstream.brokers.memory import MemoryBroker

    shared = MemoryBroker(history=5)
    sse = EvStream(broker=shared)
    first, second = Flask("first"), Flask("second")
    sse.init_app(first)
    assert first.extensions["evstream"].broker is shared
    assert sse.publish("c", "only app: no context needed") == "1"
    sse.init_app(second)  # a second app must not break the first
    with first.app_context():
        assert sse.publish("c", "from the first") == "2"
        assert sse.broker is shared
    with second.app_context():
        assert sse.publish("c", "from the second") == "3"
    with pytest.raises(RuntimeError, match="several apps: push an app context"):
        sse.publish("c", "which app?")
    # Apps are held weakly: a dropped app is forgotten.
    del second
    gc.collect()
    assert sse.publish("c", "the first again") == "4"
    with pytest.raises(TypeError, match="broker must be a flask_evstream.brokers.Broker"):
        EvStream(broker="redis://localhost")  # type: ignore[arg-type]


def test_redis_settings_are_validated() -> None:
    from flask_evstream.extension import Settings

    settings = Settings.from_config(
        {
            "EVSTREAM_REDIS_PREFIX": "app2",
            "EVSTREAM_REDIS_MAX_CONNECTIONS": 8,
            "EVSTREAM_REDIS_TIMEOUT": 2.5,
        }
    )
    assert (settings.redis_prefix, settings.redis_max_connections, settings.redis_timeout) == (
        "app2",
        8,
        2.5,
    )
    for key, bad, message in (
        ("EVSTREAM_REDIS_PREFIX", "", "EVSTREAM_REDIS_PREFIX must be 1 to 100 printable"),
        ("EVSTREAM_REDIS_PREFIX", "a b", "EVSTREAM_REDIS_PREFIX must be 1 to 100 printable"),
        ("EVSTREAM_REDIS_PREFIX", "{x}", "EVSTREAM_REDIS_PREFIX must be 1 to 100 printable"),
        ("EVSTREAM_REDIS_MAX_CONNECTIONS", 0, "EVSTREAM_REDIS_MAX_CONNECTIONS must be an integer"),
        ("EVSTREAM_REDIS_TIMEOUT", 0, "EVSTREAM_REDIS_TIMEOUT must be a number of seconds above 0"),
        ("EVSTREAM_MAX_CHANNELS", 0, "EVSTREAM_MAX_CHANNELS must be an integer"),
    ):
        with pytest.raises(ValueError, match=message):
            Settings.from_config({key: bad})
