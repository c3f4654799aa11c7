"""docs/redis.rst: the ACL user it gives, created on a real redis-server and
on a real Redis Cluster, runs everything the brokers do (publish, live
delivery, replay, a foreign key, a script flush, a pipelined batch,
resumable streams started, resumed and cancelled) without one refusal in
``ACL LOG``; and the keys the page lists are the keys Redis holds, with the
expiry it says."""

from __future__ import annotations

import re
import shlex
import threading
import typing as t
from pathlib import Path

import pytest
import redis
from flask import Flask, request

from flask_evstream import Event, EvStream, last_event_id, sse_route
from flask_evstream.resumable import close_producers
from flask_evstream.testing import iter_events, read_events

from .docs_samples import sample
from .redis_server import REDIS_SERVER, VALKEY_SERVER, RedisClusterServers, RedisServer

PASSWORD = "change-me"


def acl_rules() -> tuple[str, list[str]]:
    """The user name and the rules of the page's ``ACL SETUSER`` line."""
    words = shlex.split(sample("redis-acl"))
    assert words[:2] == ["ACL", "SETUSER"], words
    assert f">{PASSWORD}" in words
    return words[2], words[3:]


def setinfo_rule() -> str:
    """The rule the page adds from Redis 7.2 on."""
    page = (Path(__file__).parent.parent / "docs" / "redis.rst").read_text()
    found = re.search(r"Redis 7\.2 and later(?:, and Valkey)?: add ``(\S+)``", page)
    assert found, "docs/redis.rst no longer says what to add from Redis 7.2 on"
    return found[1]


def version(admin: redis.Redis) -> tuple[int, int]:
    """The Redis version a server reports (Valkey 8 reports 7.2)."""
    major, minor = admin.info("server")["redis_version"].split(".")[:2]
    return int(major), int(minor)


def create_user(admin: redis.Redis, *, page_line_only: bool = False) -> str:
    """The page's user; from Redis 7.2 on, with the rule the page adds then."""
    user, rules = acl_rules()
    if version(admin) >= (7, 2) and not page_line_only:
        rules = [*rules, setinfo_rule()]
    admin.execute_command("ACL", "SETUSER", user, "reset")  # from nothing
    admin.execute_command("ACL", "SETUSER", user, *rules)
    admin.execute_command("ACL", "LOG", "RESET")
    return user


def refusals(admin: redis.Redis) -> list[t.Any]:
    return list(admin.execute_command("ACL", "LOG"))


def make_app(url: str, channel: str) -> tuple[Flask, EvStream]:
    app = Flask("acl")
    app.config.update(EVSTREAM_BROKER_URL=url, EVSTREAM_HEARTBEAT=0.2)
    sse = EvStream(app)

    @app.get("/sub")
    @sse_route
    def sub() -> t.Any:
        return sse.subscribe(request.args.getlist("c"), last_event_id=last_event_id())

    @app.post("/chat")
    @sse_route(resumable=True)
    def chat() -> t.Any:
        n = int(request.args.get("n", "5"))
        return (f"token {i}" for i in range(n))

    @app.post("/slow")
    @sse_route(resumable=True)
    def slow() -> t.Any:
        stop = threading.Event()

        def tokens() -> t.Iterator[str]:
            try:
                while True:
                    yield "tick"
                    stop.wait(0.05)
            finally:
                stop.set()

        return tokens()

    return app, sse


def close(app: Flask) -> None:
    """Close the app's brokers once its producers have ended (as a worker's
    exit does): a producer may still be writing the ending its reader has
    already read, and a broker closed under it would fail that write."""
    left = close_producers(10)
    state = app.extensions["evstream"]
    state.broker.close()
    if state.log_broker is not None:
        state.log_broker.close()
    assert left == 0, f"{left} producer(s) still running after 10 s"


def run_everything(app: Flask, sse: EvStream, admin: t.Callable[[], t.Any], channels: list[str]):
    """What the brokers do, through the app's Redis user."""
    client = app.test_client()
    news, other = channels
    first = sse.publish(news, {"n": 1})
    second = sse.publish(news, "two", event="update")
    # Replay after Last-Event-ID, then live through the worker's reader.
    response = client.get(f"/sub?c={news}", headers={"Last-Event-ID": first})
    events = iter_events(response)
    assert next(events) == Event("two", event="update", id=second)
    threading.Timer(0.1, sse.publish, (news, "live")).start()
    assert next(events).data == "live"
    response.close()
    # A key of another type under the prefix: that channel alone is left out.
    admin().set(app.extensions["evstream"].broker._stream_key(other), "not a stream")
    response = client.get(f"/sub?c={news}&c={other}", headers={"Last-Event-ID": second})
    events = iter_events(response)
    assert next(events).event == "evstream-gap"
    assert next(events).data == "live"
    threading.Timer(0.1, sse.publish, (news, "after the bad key")).start()
    assert next(events).data == "after the bad key"
    response.close()
    # Redis forgot the script: loaded again.
    admin().script_flush()
    assert int(sse.publish(news, "after a flush")) > int(second)
    # A batch of more than one script call: pipelined, SCRIPT EXISTS first.
    ids = app.extensions["evstream"].broker.publish_many(news, [("x", None)] * 600)
    assert len(ids) == 600
    # Resumable: the first response, a resume, a cancel.
    response = client.post("/chat?n=50")
    location = response.headers["Content-Location"]
    got = read_events(response)
    assert [e.data for e in got] == [f"token {i}" for i in range(50)]
    resumed = read_events(client.get(location, headers={"Last-Event-ID": got[47].id}))
    assert [e.data for e in resumed] == ["token 48", "token 49"]
    response = client.post("/slow")
    location = response.headers["Content-Location"]
    assert read_events(response, limit=2)[0].data == "tick"
    assert client.delete(location).status_code == 202
    ending = read_events(client.get(location, headers={"Last-Event-ID": got[0].id}))
    assert ending[-1] == Event('{"reason":"cancelled"}', event="evstream-end")


def emptied(server: RedisServer) -> t.Iterator[RedisServer]:
    """``server`` emptied for a test, without the page's user after it."""
    server.admin.flushall()
    yield server
    server.admin.execute_command("ACL", "DELUSER", acl_rules()[0])


@pytest.fixture
def server(redis_server: RedisServer) -> t.Iterator[RedisServer]:
    yield from emptied(redis_server)


@pytest.fixture(scope="module")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisServer]:
    """Valkey 8, the Redis 7.2 fork: what Debian 12's Redis 7.0 cannot show."""
    server = RedisServer(tmp_path_factory.mktemp("valkey"), binary=VALKEY_SERVER)
    yield server
    server.stop()


@pytest.fixture(params=["redis", "valkey"])
def any_server(request: pytest.FixtureRequest) -> t.Iterator[RedisServer]:
    yield from emptied(request.getfixturevalue(f"{request.param}_server"))


def test_the_acl_user_runs_everything_on_one_server(any_server: RedisServer) -> None:
    server = any_server
    user = create_user(server.admin)
    url = f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0"
    app, sse = make_app(url, "news")
    try:
        run_everything(app, sse, lambda: server.admin, ["news", "bad"])
    finally:
        close(app)
    assert refusals(server.admin) == []
    # The connections are the app's user's, named as the page says.
    names = {c["name"] for c in server.admin.client_list() if c["user"] == user}
    assert names <= {"evstream", "evstream-reader", "evstream:rs", "evstream:rs-reader"}


def test_without_a_rule_of_the_page_the_app_fails(server: RedisServer) -> None:
    """The check can fail: a user without ``+xread`` is refused, and the
    refusal shows in ``ACL LOG``."""
    user = create_user(server.admin)
    server.admin.execute_command("ACL", "SETUSER", user, "-xread")
    app, sse = make_app(f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0", "news")
    try:
        response = app.test_client().get("/sub?c=news")
        threading.Timer(0.2, sse.publish, ("news", "lost")).start()
        events = iter_events(response)
        with pytest.raises(StopIteration):
            # Nothing comes (the reader is refused): the stream ends at shutdown.
            threading.Timer(1.5, app.extensions["evstream"].broker.hub.cut_off, ("news",)).start()
            next(events)
        response.close()
    finally:
        close(app)
    assert any(entry_field(e, "object") == "xread" for e in refusals(server.admin))


def test_from_redis_7_2_setinfo_is_refused_without_the_pages_rule(
    server: RedisServer, valkey_server: RedisServer
) -> None:
    """Redis 7.2 and later (here Valkey 8): with the page's line alone, the
    app works (redis-py ignores the refusal) but every connection's
    ``CLIENT SETINFO`` is refused in ``ACL LOG``; hence the rule the page
    adds. Redis 7.0 (Debian 12's) refuses a user that names it."""
    assert "valkey_version" in valkey_server.admin.info("server")
    assert version(valkey_server.admin) >= (7, 2)
    valkey_server.admin.flushall()
    user = create_user(valkey_server.admin, page_line_only=True)
    app, sse = make_app(f"redis://{user}:{PASSWORD}@127.0.0.1:{valkey_server.port}/0", "news")
    try:
        first = sse.publish("news", "works")
        response = app.test_client().get("/sub?c=news", headers={"Last-Event-ID": "0"})
        assert next(iter_events(response)) == Event("works", id=first)
        response.close()
    finally:
        close(app)
        valkey_server.admin.execute_command("ACL", "DELUSER", user)
    objects = [entry_field(e, "object") for e in refusals(valkey_server.admin)]
    assert objects and set(objects) == {"client|setinfo"}, objects
    assert version(server.admin) < (7, 2), "Redis here is 7.2+: test the refusal elsewhere"
    with pytest.raises(redis.ResponseError, match="setinfo"):
        server.admin.execute_command("ACL", "SETUSER", "evstream-old", setinfo_rule())


def entry_field(entry: t.Any, name: str) -> t.Any:
    if isinstance(entry, dict):
        return entry.get(name)
    fields = dict(zip(entry[::2], entry[1::2]))
    value = fields.get(name, fields.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


def test_the_keys_and_their_expiry_are_the_pages(server: RedisServer) -> None:
    app = Flask("keys")
    app.config.update(EVSTREAM_BROKER_URL=server.url)
    sse = EvStream(app)

    @app.post("/chat")
    @sse_route(resumable=True)
    def chat() -> t.Any:
        return iter(["a", "b"])

    try:
        sse.publish("news", "x")
        response = app.test_client().post("/chat")
        sid = response.headers["Content-Location"].rsplit("/", 1)[1]
        read_events(response)
        sse.cancel(sid)
    finally:
        close(app)
    admin = server.admin
    ttl = {key: admin.pttl(key) for key in admin.keys("*")}
    day, resume = 86400 * 1000, 600 * 1000
    expected = {
        "evstream:id": (-1, -1),
        "evstream:ch:news": (day - 60_000, day),
        "evstream:clock": (2 * day - 60_000, 2 * day),
        "evstream:rs:id": (-1, -1),
        f"evstream:rs:ch:rs:{{{sid}}}": (resume - 60_000, resume),
        f"evstream:rs:ch:rs:{{{sid}}}:ctl": (resume - 60_000, resume),
        "evstream:rs:clock": (2 * resume - 60_000, 2 * resume),
    }
    assert set(ttl) == set(expected)
    for key, (low, high) in expected.items():
        assert low <= ttl[key] <= high, (key, ttl[key])
    page = (Path(__file__).parent.parent / "docs" / "redis.rst").read_text()
    for key in expected:
        as_listed = key.replace(sid, "<stream id>").replace(":news", ":<channel>")
        assert f"``{as_listed}``" in page, key


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[RedisClusterServers]:
    binary = {"redis": REDIS_SERVER, "valkey": VALKEY_SERVER}[request.param]
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"), binary=binary)
    yield servers
    servers.stop()


def test_the_acl_user_runs_everything_on_a_cluster(cluster: RedisClusterServers) -> None:
    cluster.flushall()
    for node in cluster.nodes:
        user = create_user(node.admin)
    port = cluster.nodes[0].port
    app, sse = make_app(f"redis+cluster://{user}:{PASSWORD}@127.0.0.1:{port}/", "room:{1}:chat")
    node_of_bad = [None]

    def admin() -> t.Any:
        # The node of the bad channel's keys.
        if node_of_bad[0] is None:
            key = app.extensions["evstream"].broker._stream_key("room:{1}:typing")
            node_of_bad[0] = cluster.nodes[cluster.node_of(key)].admin
        return _AllNodes(cluster, node_of_bad[0])

    try:
        run_everything(app, sse, admin, ["room:{1}:chat", "room:{1}:typing"])
    finally:
        close(app)
    for node in cluster.nodes:
        assert refusals(node.admin) == []


class _AllNodes:
    """``set`` on the node of the key, ``script_flush`` on every node."""

    def __init__(self, cluster: RedisClusterServers, node: t.Any) -> None:
        self._cluster = cluster
        self._node = node

    def set(self, key: str, value: str) -> None:
        self._node.set(key, value)

    def script_flush(self) -> None:
        for node in self._cluster.nodes:
            node.admin.script_flush()


def test_owned_chat_only_its_owner_resumes_or_stops(server: RedisServer) -> None:
    """docs/resumable.rst's authorize hook, with the owners in Redis."""
    from docs.examples.owned_chat import create_app

    app = create_app(server.url)
    try:
        client = app.test_client()
        assert client.post("/chat", json={"prompt": "hi"}).status_code == 401
        client.post("/login", json={"user": "ada"})
        response = client.post("/chat", json={"prompt": "hi"})
        location = response.headers["Content-Location"]
        events = read_events(response)
        assert [e.data for e in events] == ["You ", "asked: ", "hi "]
        sid = location.rsplit("/", 1)[1]
        assert server.admin.get(f"owner:{sid}") == "ada"
        assert 0 < server.admin.ttl(f"owner:{sid}") <= 3600
        again = read_events(client.get(location, headers={"Last-Event-ID": events[0].id}))
        assert [e.data for e in again] == ["asked: ", "hi "]
        other = app.test_client()
        other.post("/login", json={"user": "bob"})
        assert other.get(location).status_code == 403
        assert other.delete(location).status_code == 403
        assert app.test_client().get(location).status_code == 403  # nobody logged in
        assert client.delete(location).status_code == 202
    finally:
        close(app)
        app.extensions["owners"].close()
