"""The Redis Cluster broker against a real cluster of three masters started by
the test (``redis-server --cluster-enabled yes`` on three loopback ports,
joined by ``redis-cli --cluster create``): ids per hash-tag group, replay,
live events on every node, announcements lost and caught up, keys that
expire without ids going back, a node restarted; then two gunicorn servers
(gevent workers) sharing the cluster.
"""

from __future__ import annotations

import json
import time
import typing as t
from pathlib import Path

import httpx
import pytest

from flask_evstream import GAP_EVENT
from flask_evstream.brokers import broker_from_url
from flask_evstream.brokers import redis_cluster as cluster_module
from flask_evstream.brokers.redis import RedisUnavailable
from flask_evstream.brokers.redis_cluster import RedisClusterBroker, group_of, parse_cluster_url

from .conftest import Server
from .redis_server import RedisClusterServers
from .sockets import RawStream
from .test_broadcast_server import publish as http_publish
from .test_broadcast_server import read_events
from .test_redis import Consumer, subscribe

APP = "tests.apps.broadcast:app"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    yield servers
    servers.stop()


@pytest.fixture
def make_broker(
    cluster: RedisClusterServers,
) -> t.Iterator[t.Callable[..., RedisClusterBroker]]:
    cluster.flushall()
    made: list[RedisClusterBroker] = []

    def make(url: str | None = None, history: int = 100, **kwargs: t.Any) -> RedisClusterBroker:
        broker = RedisClusterBroker(url or cluster.url, history=history, **kwargs)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def pub(broker: RedisClusterBroker, channel: str, data: str) -> int:
    return broker.publish(channel, data, event=None, id=None)


# -- names and URLs ---------------------------------------------------------


def test_cluster_urls() -> None:
    assert parse_cluster_url("redis+cluster://127.0.0.1:7000/") == {
        "nodes": [("127.0.0.1", 7000)],
        "options": {},
    }
    assert parse_cluster_url("rediss+cluster://u:p%40ss@a:1,b:2,c") == {
        "nodes": [("a", 1), ("b", 2), ("c", 6379)],
        "options": {"username": "u", "password": "p@ss", "ssl": True},
    }
    with pytest.raises(ValueError, match="only database 0, got '/3'"):
        parse_cluster_url("redis+cluster://a:1/3")
    with pytest.raises(ValueError, match="host:port separated by commas, got 'a:x'"):
        parse_cluster_url("redis+cluster://a:x/")
    with pytest.raises(ValueError, match="must be a non-empty name without braces"):
        broker_from_url("redis+cluster://127.0.0.1:1/", history=1, prefix="a{b}")


def test_groups_are_hash_tags() -> None:
    assert group_of("room:{42}:chat") == "42"
    assert group_of("{42}") == "42"
    assert group_of("news") == "news"
    assert group_of("odd{}name") == "odd{}name"  # Redis hashes the whole key then


def test_channels_of_two_groups_or_stray_braces_are_refused(
    make_broker: t.Callable[..., RedisClusterBroker],
) -> None:
    broker = make_broker()
    broker.check_channels(["room:{42}:chat", "room:{42}:typing", "42"])
    with pytest.raises(ValueError) as error:
        broker.check_channels(["room:{1}:chat", "room:{2}:chat"])
    assert str(error.value) == (
        "on Redis Cluster the channels of one subscription must share one hash tag"
        " (their ids come from one counter), got 'room:{1}:chat' (group '1') and"
        " 'room:{2}:chat' (group '2'); name them like 'room:{42}:chat' and 'room:{42}:typing'"
    )
    for bad in ("a{b", "a}b", "{a}{b}", "{}"):
        with pytest.raises(ValueError, match="at most one hash tag"):
            broker.check_channels([bad])
        with pytest.raises(ValueError, match="at most one hash tag"):
            pub(broker, bad, "x")
    assert broker.info()["channels"] == 0


# -- ids, history, live -------------------------------------------------------


def test_ids_increase_per_group_and_history_replays_them(
    cluster: RedisClusterServers, make_broker: t.Callable[..., RedisClusterBroker]
) -> None:
    broker = make_broker(history=3)
    channels = [cluster.channel_on(i, "h") for i in range(3)]
    assert {cluster.node_of(f"evstream:{{{c}}}:ch:{c}") for c in channels} == {0, 1, 2}
    ids = {c: [pub(broker, c, f"{c}/{k}") for k in range(5)] for c in channels}
    for c in channels:
        # One counter per group, started from the server clock (microseconds).
        assert ids[c] == list(range(ids[c][0], ids[c][0] + 5))
        assert abs(ids[c][0] / 1e6 - time.time()) < 3600
        events, gap = broker.history([c], ids[c][1])
        assert [(n, e.data) for n, e in events] == [
            (n, f"{c}/{k}") for k, n in enumerate(ids[c]) if k > 1
        ]
        assert gap == []
        # Older than the history kept: the newest 3, and a gap.
        events, gap = broker.history([c], ids[c][0])
        assert [n for n, _ in events] == ids[c][2:] and gap == [c]
    # Two channels of one group share the counter and merge in order.
    a, b = "room:{7}:a", "room:{7}:b"
    both = [pub(broker, a if k % 2 else b, str(k)) for k in range(4)]
    assert both == list(range(both[0], both[0] + 4))
    events, gap = broker.history([a, b], both[0])
    assert [(n, e.data) for n, e in events] == [(n, str(k)) for k, n in enumerate(both)][1:]
    assert gap == []


def test_live_events_on_every_node_arrive_in_order(
    cluster: RedisClusterServers, make_broker: t.Callable[..., RedisClusterBroker]
) -> None:
    reader, writer = make_broker(), make_broker()  # two processes' worth
    channels = [cluster.channel_on(i, "live") for i in range(3)]
    group = ["team:{9}:x", "team:{9}:y"]
    consumers = {c: Consumer(subscribe(reader, [c])) for c in channels}
    pair = Consumer(subscribe(reader, group))
    sent: dict[str, list[int]] = {c: [] for c in channels}
    pair_sent = []
    for k in range(30):
        c = channels[k % 3]
        sent[c].append(pub(writer, c, f"e{k}"))
        pair_sent.append(pub(writer, group[k % 2], f"p{k}"))
    for c in channels:
        assert consumers[c].wait_id(sent[c][-1]) == sent[c]
        assert [e.data for e in consumers[c].events] == [
            f"e{k}" for k in range(30) if k % 3 == channels.index(c)
        ]
    assert pair.wait_id(pair_sent[-1]) == pair_sent
    for consumer in [*consumers.values(), pair]:
        consumer.close()
    assert reader.info()["channels"] == 0 and reader.info()["groups"] == 0


def test_lost_announcements_are_read_from_the_streams(
    cluster: RedisClusterServers,
    make_broker: t.Callable[..., RedisClusterBroker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events stored but never announced (what a restarted node or a broken
    cluster bus loses) reach the subscribers in order: before the next
    announced event of the group, or at the reader's next look at the
    counters when none follows."""
    monkeypatch.setattr(cluster_module, "SWEEP_SECONDS", 0.2)
    reader = make_broker()
    silent = make_broker()
    silent._notify_channel = lambda group: ""  # type: ignore[method-assign]
    a, b = "room:{5}:a", "room:{5}:b"
    both = Consumer(subscribe(reader, [a, b]))
    only_a = Consumer(subscribe(reader, [a]))
    first = pub(silent, b, "lost b")  # lost on another channel of the group
    second = pub(reader, a, "announced a")
    assert both.wait_id(second) == [first, second]
    assert [e.data for e in both.events] == ["lost b", "announced a"]
    assert only_a.wait_id(second) == [second]
    third = pub(silent, a, "lost last")  # nothing follows it
    assert both.wait_id(third) == [first, second, third]
    assert only_a.wait_id(third) == [second, third]
    both.close()
    only_a.close()


def test_a_foreign_key_fails_its_channel_alone(
    cluster: RedisClusterServers,
    make_broker: t.Callable[..., RedisClusterBroker],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key of the group that is not a stream (another program's) makes
    its channel fail, logged, while the group's other channels go on, also
    when lost announcements are read from the streams."""
    monkeypatch.setattr(cluster_module, "SWEEP_SECONDS", 0.2)
    reader, silent = make_broker(), make_broker()
    silent._notify_channel = lambda group: ""  # type: ignore[method-assign]
    good, bad = "shop:{8}:good", "shop:{8}:bad"
    node = cluster.nodes[cluster.node_of(f"evstream:{{8}}:ch:{bad}")]
    node.admin.set(f"evstream:{{8}}:ch:{bad}", "not a stream")
    with pytest.raises(RuntimeError, match="exists and is not a stream"):
        pub(reader, bad, "x")
    both = Consumer(subscribe(reader, [good, bad], after=0))
    lost = pub(silent, good, "lost")
    announced = pub(reader, good, "announced")
    assert both.wait_id(announced)[-2:] == [lost, announced]
    assert reader.info()["connected"]
    both.close()
    errors = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert errors and all("holds a string, not a stream" in e for e in errors)


def test_expired_keys_never_make_ids_go_back(
    cluster: RedisClusterServers, make_broker: t.Callable[..., RedisClusterBroker]
) -> None:
    broker = make_broker(channel_ttl=1, clock_interval=0.1)
    channel = cluster.channel_on(1, "ttl")
    old = pub(broker, channel, "old")
    node = cluster.nodes[cluster.node_of(f"evstream:{{{channel}}}:id")]
    deadline = time.monotonic() + 10
    while node.admin.exists(f"evstream:{{{channel}}}:id") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.admin.keys("evstream:*") == []  # stream, counter and clock gone
    new = pub(broker, channel, "new")
    assert new > old
    # A client that saw the expired event is told it may have missed some.
    events, gap = broker.history([channel], old)
    assert [(n, e.data) for n, e in events] == [(new, "new")] and gap == [channel]


def test_a_node_restart_loses_nothing_a_subscription_should_get(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The node the reader is connected to, which also holds a subscribed
    channel, is killed -9 and started again (no failover: no replicas). Its
    groups cannot publish or replay meanwhile (a clear RedisUnavailable); the
    other nodes' groups go on live; once it is back every event published
    reaches the subscribers, in order, and its data is intact."""
    servers = RedisClusterServers(tmp_path)
    broker = RedisClusterBroker(servers.url, history=100, socket_timeout=2)
    try:
        elsewhere_first = Consumer(subscribe(broker, ["warm"]))
        port = int(broker.info()["node"].rpartition(":")[2])
        node = [n.port for n in servers.nodes].index(port)
        on_node = servers.channel_on(node, "down")
        other = servers.channel_on((node + 1) % 3, "up")
        down = Consumer(subscribe(broker, [on_node]))
        up = Consumer(subscribe(broker, [other]))
        before = [pub(broker, on_node, f"before {k}") for k in range(3)]
        assert down.wait_id(before[-1]) == before

        servers.nodes[node].kill()
        with pytest.raises(RedisUnavailable, match="Redis is unreachable"):
            pub(broker, on_node, "never")
        with pytest.raises(RedisUnavailable):
            broker.history([on_node], before[0])
        # The reader moves to another node; the other groups go on live.
        during = [pub(broker, other, f"during {k}") for k in range(3)]
        assert up.wait_id(during[-1], timeout=20) == during

        servers.nodes[node].start()
        servers.wait_ok()
        after: list[int] = []
        deadline = time.monotonic() + 30
        while len(after) < 20 and time.monotonic() < deadline:
            try:
                after.append(pub(broker, on_node, f"after {len(after)}"))
            except RedisUnavailable:
                time.sleep(0.1)
        assert len(after) == 20
        assert down.wait_id(after[-1], timeout=20) == before + after
        assert [e.data for e in down.events] == [f"before {k}" for k in range(3)] + [
            f"after {k}" for k in range(20)
        ]
        events, gap = broker.history([on_node], before[0])
        assert [n for n, _ in events] == before[1:] + after and gap == []
        assert broker.info()["reconnects"] >= 1
        for consumer in (elsewhere_first, down, up):
            consumer.close()
    finally:
        broker.close()
        servers.stop()


# -- two gunicorn servers ---------------------------------------------------


def sub_stream(server: Server, channels: list[str], after: str) -> RawStream:
    query = httpx.QueryParams([("c", c) for c in channels])
    return RawStream(server.url, f"/sub?{query}", headers={"Last-Event-ID": after})


@pytest.mark.server
def test_two_servers_fan_out_and_replay_on_a_cluster(
    start_server: t.Callable[..., Server], cluster: RedisClusterServers
) -> None:
    cluster.flushall()
    env = {"EVSTREAM_BROKER_URL": cluster.url}
    one = start_server(APP, env=env)
    two = start_server(APP, env=env, workers=2)
    channels = [cluster.channel_on(i, "fan") for i in range(3)]
    pair = ["room:{3}:chat", "room:{3}:typing"]
    # Lockstep: each stream resumes after a first event and gets the second
    # from the history, so it is registered before anything else is sent.
    hello = {
        c: [http_publish(one, c, f"hello {c} {k}") for k in range(2)] for c in [*channels, *pair]
    }
    streams: list[tuple[list[str], RawStream]] = []
    for c in channels:
        for server in (one, two, two, two):
            streams.append(([c], sub_stream(server, [c], hello[c][0])))
    for server in (one, two):
        streams.append((pair, sub_stream(server, pair, hello[pair[1]][0])))
    for names, stream in streams:
        assert stream.status == 200
        # (the pair's hellos went out chat, chat, typing, typing)
        assert [i for i, _ in read_events(stream, 1)] == [hello[names[-1]][1]]
    sent: dict[str, list[tuple[str, str]]] = {c: [] for c in [*channels, *pair]}
    for k in range(12):
        for c in [*channels, *pair]:
            data = f"{c} {k}"
            sent[c].append((http_publish(one if k % 2 else two, c, data), data))
    for names, stream in streams:
        expected = sorted((e for n in names for e in sent[n]), key=lambda e: int(e[0]))
        assert read_events(stream, len(expected)) == expected
        stream.close()
    # Replay on the other server, and a pair of channels resumes as one.
    c = channels[2]
    stream = sub_stream(one, [c], sent[c][5][0])
    assert read_events(stream, 6) == sent[c][6:]
    stream.close()
    # Two groups in one subscription: a clear 400.
    response = httpx.get(f"{one.url}/sub", params=[("c", channels[0]), ("c", channels[1])])
    assert response.status_code == 400
    assert "must share one hash tag" in response.text
    for server in (one, two):
        assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.server
def test_a_node_restart_under_two_servers(
    start_server: t.Callable[..., Server], tmp_path: Path
) -> None:
    """A node of the cluster is killed -9 and started again while two servers
    stream: its channels answer 503 to publishers and the gap event (with a
    200) to clients that reconnect meanwhile, the other channels go on, and
    once it is back every client gets every event of its channel."""
    servers = RedisClusterServers(tmp_path)
    try:
        env = {"EVSTREAM_BROKER_URL": servers.url, "TEST_HEARTBEAT": "1", "TEST_REDIS_TIMEOUT": "3"}
        one = start_server(APP, env=env)
        two = start_server(APP, env=env, workers=2)
        channels = [servers.channel_on(i, "node") for i in range(3)]
        hello = {c: [http_publish(one, c, f"hello {k}") for k in range(2)] for c in channels}
        streams = {c: [sub_stream(s, [c], hello[c][0]) for s in (one, two, two)] for c in channels}
        for c in channels:
            for s in streams[c]:
                assert read_events(s, 1) == [(hello[c][1], "hello 1")]
        dead = 1
        servers.nodes[dead].kill()
        down = channels[dead]
        response = httpx.post(f"{one.url}/publish/{down}", json={"data": "lost"}, timeout=30)
        assert response.status_code == 503 and "Redis is unreachable" in response.json()["error"]
        for c in channels:
            if c != down:
                i = http_publish(two, c, "during")
                for s in streams[c]:
                    assert read_events(s, 1) == [(i, "during")]
        # A client of the dead node's channel reconnects: 200, gap first.
        streams[down][0].close()
        again = sub_stream(one, [down], hello[down][1])
        assert again.status == 200
        block = again.read_until(b"\n\n").decode()
        gap = json.dumps(
            {"channels": [down], "last_event_id": hello[down][1]}, separators=(",", ":")
        )
        assert block == f"event: {GAP_EVENT}\ndata: {gap}\n\n", block
        streams[down][0] = again

        servers.nodes[dead].start()
        servers.wait_ok()
        after: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30
        while len(after) < 10 and time.monotonic() < deadline:
            response = httpx.post(
                f"{two.url}/publish/{down}", json={"data": f"back {len(after)}"}, timeout=30
            )
            if response.status_code == 200:
                after.append((str(response.json()["id"]), f"back {len(after)}"))
            else:
                assert response.status_code == 503, response.text
                time.sleep(0.1)
        assert len(after) == 10
        for s in streams[down]:
            assert read_events(s, 10) == after
        # Its history is intact: a resume from the first hello gets it all.
        s = sub_stream(two, [down], hello[down][0])
        assert [i for i, _ in read_events(s, 11)] == [hello[down][1]] + [i for i, _ in after]
        s.close()
        for c in channels:
            for s in streams[c]:
                s.close()
        for server in (one, two):
            assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        servers.stop()


def test_publish_many_on_a_cluster_is_announced_in_order(
    cluster: RedisClusterServers, make_broker: t.Callable[..., RedisClusterBroker]
) -> None:
    broker = make_broker(history=1000)
    channel = "rs:{abc}"
    live = Consumer(subscribe(broker, [channel]))
    ids = broker.publish_many(channel, [(f"e{i}", None) for i in range(700)])
    assert ids == list(range(ids[0], ids[0] + 700))
    assert live.wait_id(ids[-1]) == ids
    assert [e.data for e in live.events] == [f"e{i}" for i in range(700)]
    live.close()


@pytest.mark.server
def test_a_resumable_answer_on_a_cluster_resumes_on_the_other_server_and_stops(
    start_server: t.Callable[..., Server], cluster: RedisClusterServers, redis_server: t.Any
) -> None:
    """Resumable streams end to end on the cluster (the log is one hash-tag
    group, ``rs:{<stream id>}``): an answer cut after five events resumes on
    the other server with exactly the rest; a DELETE on one server stops a
    generator that runs on the other."""
    from httpx_sse import connect_sse

    cluster.flushall()
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": cluster.url, "TEST_REDIS_URL": redis_server.url}
    one = start_server("tests.apps.resumable:app", env=env)
    two = start_server("tests.apps.resumable:app", env=env, workers=2)
    with httpx.Client(timeout=30) as client:
        body = {"prompt": "tok", "n": 30, "delay": 0.01}
        with connect_sse(client, "POST", f"{one.url}/chat", json=body) as source:
            location = source.response.headers["content-location"]
            first = []
            for sse in source.iter_sse():
                first.append((sse.id, sse.data))
                if len(first) == 5:
                    break
        headers = {"Last-Event-ID": first[-1][0]}
        with connect_sse(client, "GET", f"{two.url}{location}", headers=headers) as source:
            rest = [(sse.id, sse.data) for sse in source.iter_sse()]
        sid = location.rsplit("/", 1)[1]
        assert first + rest == [(f"{sid}.{i + 1}", f"tok {i}") for i in range(30)]
        # Stop is a separate request, to the other server.
        body = {"prompt": "long", "n": 100000, "delay": 0.01}
        with connect_sse(client, "POST", f"{one.url}/chat", json=body) as source:
            location = source.response.headers["content-location"]
            events = source.iter_sse()
            next(events)
            assert client.delete(f"{two.url}{location}").status_code == 202
            last = list(events)[-1]
        assert (last.event, last.data) == ("evstream-end", '{"reason":"cancelled"}')
    for server in (one, two):
        assert "Traceback" not in server.log(), server.log()[-3000:]
