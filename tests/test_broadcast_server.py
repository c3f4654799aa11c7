"""Broadcast through real gunicorn gevent workers, with the memory broker and
with Redis (a real redis-server), read by httpx-sse and raw sockets."""

from __future__ import annotations

import json
import threading
import time
import typing as t
from pathlib import Path

import httpx
import pytest

from .conftest import Server
from .redis_server import RedisServer
from .sockets import RawStream

pytestmark = pytest.mark.server

APP = "tests.apps.broadcast:app"


def publish(server: Server, channel: str, data: t.Any, event: str | None = None) -> str:
    response = httpx.post(
        f"{server.url}/publish/{channel}", json={"data": data, "event": event}, timeout=10
    )
    response.raise_for_status()
    return str(response.json()["id"])


def read_events(stream: RawStream, n: int, timeout: float = 20) -> list[tuple[str, str]]:
    """(id, data) of the next ``n`` events on a raw stream (heartbeats skipped)."""
    out: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"got only {out}"
        block = stream.read_until(b"\n\n").decode()
        fields = dict(
            line.split(": ", 1)
            for line in block.strip("\n").split("\n")
            if not line.startswith(":")
        )
        if "data" in fields:
            out.append((fields.get("id", ""), fields["data"]))
    return out


@pytest.mark.parametrize("path", ["/sub", "/gen"])
def test_memory_broker_replay_and_live(start_server: t.Callable[..., Server], path: str) -> None:
    server = start_server(APP)
    first = publish(server, "news", {"n": 1})
    publish(server, "news", {"n": 2})
    stream = RawStream(server.url, f"{path}?c=news", headers={"Last-Event-ID": first})
    assert stream.status == 200
    assert read_events(stream, 1) == [("2", '{"n":2}')]
    publish(server, "news", {"n": 3})
    assert read_events(stream, 1) == [("3", '{"n":3}')]
    stream.close()
    stats = server.wait_stats(lambda s: s["live"] == 0 and s["subscriptions"] == 0, 5)
    assert (stats["live"], stats["subscriptions"]) == (0, 0)


def test_refused_channel_is_403(start_server: t.Callable[..., Server]) -> None:
    server = start_server(APP)
    for path in ("/sub", "/gen"):
        response = httpx.get(f"{server.url}{path}?c=news&c=private-x", timeout=10)
        assert response.status_code == 403
    assert server.stats()["subscriptions"] == 0


def test_slow_client_is_cut_off_and_others_keep_going(
    start_server: t.Callable[..., Server],
) -> None:
    """A client that stops reading: its queue (50 events) overflows and it is
    cut off; publishing never waits for it (lockstep: each publish returns
    and the other subscriber has the event before the next publish, which a
    publisher or reader stuck on the slow client's full socket would not);
    the other subscriber gets every event in order. The bench measures the
    latency itself."""
    server = start_server(APP, env={"TEST_QUEUE_SIZE": "50"})
    slow = RawStream(server.url, "/sub?c=firehose")  # never read again
    fast = RawStream(server.url, "/sub?c=firehose")
    server.wait_stats(lambda s: s["subscriptions"] == 2, 5)
    payload = "x" * 50_000  # 10 MB in all: more than loopback socket buffers hold
    for i in range(200):
        publish(server, "firehose", {"i": i, "pad": payload})
        (event_id, data) = read_events(fast, 1)[0]
        assert json.loads(data)["i"] == i
    # The slow one was cut off: only the fast subscription is left.
    stats = server.wait_stats(lambda s: s["subscriptions"] == 1, 10)
    assert stats["subscriptions"] == 1
    fast.close()
    slow.close()


def test_two_servers_and_two_workers_share_one_redis(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url}
    one = start_server(APP, env=env)
    two = start_server(APP, env=env, workers=2)
    streams = [RawStream(one.url, "/sub?c=room")]
    # Several connections to the two-worker server land on both workers.
    streams += [RawStream(two.url, "/gen?c=room") for _ in range(6)]
    time.sleep(0.5)
    ids = [publish(one if i % 2 else two, "room", {"i": i}) for i in range(20)]
    assert ids == sorted(ids, key=int) and len(set(ids)) == 20
    for stream in streams:
        got = read_events(stream, 20)
        assert got == [(ids[i], json.dumps({"i": i}, separators=(",", ":"))) for i in range(20)]
    for stream in streams:
        stream.close()
    # Replay across servers: a client of server one resumes from an id
    # published through server two.
    stream = RawStream(one.url, "/sub?c=room", headers={"Last-Event-ID": ids[17]})
    assert [i for i, _ in read_events(stream, 2)] == ids[18:]
    stream.close()


def test_redis_connections_stay_constant_with_500_subscribers(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    redis_server.admin.flushall()
    server = start_server(APP, env={"EVSTREAM_BROKER_URL": redis_server.url, "TEST_HEARTBEAT": "5"})
    counts = []
    streams: list[RawStream] = []
    for total in (50, 500):
        new = [
            RawStream(server.url, f"/sub?c=c{i % 50}", wait=False)
            for i in range(len(streams), total)
        ]
        for s in new:
            s.read_head()
            assert s.status == 200
        streams += new
        stats = server.wait_stats(lambda s, n=total: s["subscriptions"] == n, 20)
        assert stats["subscriptions"] == total
        counts.append(len(redis_server.clients("evstream")))
    publish(server, "c7", "hello")
    assert read_events(streams[7], 1)[0][1] == "hello"
    for s in streams:
        s.close()
    # One reader plus a pool of at most 4, whatever the number of browsers.
    assert all(1 <= c <= 5 for c in counts), counts


def test_redis_restart_mid_stream(start_server: t.Callable[..., Server], tmp_path: Path) -> None:
    (tmp_path / "restartable").mkdir()
    redis = RedisServer(tmp_path / "restartable")
    try:
        server = start_server(APP, env={"EVSTREAM_BROKER_URL": redis.url})
        streams = [RawStream(server.url, "/sub?c=log"), RawStream(server.url, "/gen?c=log")]
        time.sleep(0.3)
        before = [publish(server, "log", f"before {i}") for i in range(5)]
        expected = [(i, f"before {n}") for n, i in enumerate(before)]
        for s in streams:
            assert read_events(s, 5) == expected
        redis.kill()
        # While Redis is down the streams stay open: heartbeats keep coming.
        for s in streams:
            assert s.read_until(b": ping\n").endswith(b": ping\n")
        redis.start()
        after: list[str] = []
        deadline = time.monotonic() + 15
        while len(after) < 5 and time.monotonic() < deadline:
            try:
                after.append(publish(server, "log", f"after {len(after)}"))
            except httpx.HTTPStatusError:
                time.sleep(0.1)  # the app's pool reconnects
        assert len(after) == 5
        assert int(after[0]) > int(before[-1])
        expected = [(i, f"after {n}") for n, i in enumerate(after)]
        for s in streams:
            assert read_events(s, 5) == expected
            s.close()
    finally:
        redis.stop()


def test_publish_from_another_thread_reaches_http_subscribers(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    """A separate process publishing through the same Redis (a CLI, a job)."""
    redis_server.admin.flushall()
    server = start_server(APP, env={"EVSTREAM_BROKER_URL": redis_server.url})
    stream = RawStream(server.url, "/sub?c=jobs")
    time.sleep(0.3)
    from flask import Flask

    from flask_evstream import EvStream

    other = Flask("publisher")
    other.config["EVSTREAM_BROKER_URL"] = redis_server.url
    sse = EvStream(other)
    ids: list[str] = []
    thread = threading.Thread(target=lambda: ids.append(sse.publish("jobs", {"done": 1})))
    thread.start()
    thread.join()
    assert read_events(stream, 1) == [(ids[0], '{"done":1}')]
    stream.close()
    sse.broker.close()


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_a_subscription_in_a_generator_is_closed_with_its_stream(
    start_server: t.Callable[..., Server], worker: str
) -> None:
    """The generator sleeps after each event; the client leaves meanwhile.
    The stream closes within two heartbeats, and its subscription with it."""
    server = start_server(APP, worker=worker)
    first = publish(server, "busy", "one")
    stream = RawStream(server.url, "/work?c=busy&work=30", headers={"Last-Event-ID": "0"})
    assert read_events(stream, 1) == [(first, "one")]  # the generator is now at work
    assert server.stats()["subscriptions"] == 1
    stream.close()
    # Heartbeats every 0.5 s find the client gone; generous bound for a busy machine.
    stats = server.wait_stats(lambda s: s["live"] == 0 and s["subscriptions"] == 0, 10)
    assert (stats["live"], stats["subscriptions"]) == (0, 0)


@pytest.mark.parametrize("path", ["/sub", "/gen"])
def test_too_many_channels_is_a_clear_400(start_server: t.Callable[..., Server], path: str) -> None:
    server = start_server(APP)
    query = "&".join(f"c=ch{i}" for i in range(33))
    response = httpx.get(f"{server.url}{path}?{query}", timeout=10)
    assert response.status_code == 400
    assert "at most 32 channels (EVSTREAM_MAX_CHANNELS), got 33" in response.text
    query = "&".join(f"c=ch{i}" for i in range(32))
    with httpx.stream("GET", f"{server.url}{path}?{query}", timeout=10) as ok:
        assert ok.status_code == 200
    assert server.wait_stats(lambda s: s["subscriptions"] == 0, 10)["subscriptions"] == 0


def test_a_redis_outage_never_turns_reconnects_into_errors(
    start_server: t.Callable[..., Server], tmp_path: Path
) -> None:
    """200 clients on 10 channels; Redis is killed; 50 of them reconnect with
    their Last-Event-ID meanwhile and get a 200 with the gap event first (an
    EventSource never retries after a non-200); publishing answers a clear
    503; Redis comes back; every client, old or new, gets the next event, and
    the worker's memory and Redis connections are back to normal."""
    (tmp_path / "outage").mkdir()
    redis = RedisServer(tmp_path / "outage")
    try:
        server = start_server(APP, env={"EVSTREAM_BROKER_URL": redis.url, "TEST_HEARTBEAT": "2"})
        channels = [f"room{i}" for i in range(10)]
        first = {c: publish(server, c, f"hello {c}") for c in channels}
        streams = []
        for i in range(200):
            s = RawStream(server.url, f"/sub?c={channels[i % 10]}", headers={"Last-Event-ID": "0"})
            assert s.status == 200
            streams.append(s)
        for i, s in enumerate(streams):
            c = channels[i % 10]
            assert read_events(s, 1) == [(first[c], f"hello {c}")]
        before = server.wait_stats(lambda s: s["subscriptions"] == 200, 10)
        assert before["subscriptions"] == 200
        connections_before = len(redis.clients("evstream"))

        redis.kill()
        response = httpx.post(f"{server.url}/publish/room0", json={"data": "lost"}, timeout=30)
        assert response.status_code == 503
        assert "Redis is unreachable" in response.json()["error"]
        for i in range(50):  # these reconnect during the outage
            streams[i].close()
            c = channels[i % 10]
            s = RawStream(server.url, f"/sub?c={c}", headers={"Last-Event-ID": first[c]})
            assert s.status == 200
            block = s.read_until(b"\n\n").decode()
            gap = f'{{"channels":["{c}"],"last_event_id":"{first[c]}"}}'
            assert block == f"event: evstream-gap\ndata: {gap}\n\n", block
            streams[i] = s
        # The 50 closed ones are noticed at their next heartbeat.
        assert server.wait_stats(lambda s: s["subscriptions"] == 200, 15)["subscriptions"] == 200

        redis.start()
        after: dict[str, str] = {}
        deadline = time.monotonic() + 30
        for c in channels:
            while c not in after and time.monotonic() < deadline:
                response = httpx.post(
                    f"{server.url}/publish/{c}", json={"data": f"back {c}"}, timeout=30
                )
                if response.status_code == 200:
                    after[c] = str(response.json()["id"])
                else:
                    assert response.status_code == 503, response.text
                    time.sleep(0.1)
        assert len(after) == 10
        for i, s in enumerate(streams):
            c = channels[i % 10]
            assert read_events(s, 1) == [(after[c], f"back {c}")], i
        for s in streams:
            s.close()
        stats = server.wait_stats(lambda s: s["subscriptions"] == 0 and s["live"] == 0, 20)
        assert (stats["subscriptions"], stats["live"]) == (0, 0)
        # Memory: what 200 streams held is freed (generous: the allocator
        # keeps some); connections: the reader plus the pool, as before.
        assert stats["rss"] < before["rss"] + 16 * 1024, (before["rss"], stats["rss"])
        assert 1 <= len(redis.clients("evstream")) <= max(connections_before, 5)
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        redis.stop()


MEMORY_WARNING = "the broker is memory:// and gunicorn runs 2 workers"


def test_memory_broker_in_two_workers_is_warned_about(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    two = start_server(APP, workers=2)
    one = start_server(APP, workers=1)
    with_redis = start_server(APP, workers=2, env={"EVSTREAM_BROKER_URL": redis_server.url})
    for server in (two, one, with_redis):
        server.stop()
    assert two.log().count(MEMORY_WARNING) == 2, two.log()  # once per worker
    assert "memory://" not in one.log()
    assert "memory://" not in with_redis.log()


def test_the_sync_worker_is_warned_about(start_server: t.Callable[..., Server]) -> None:
    server = start_server(APP, worker="sync")
    server.stop()
    assert "the sync worker serves one request at a time" in server.log()
