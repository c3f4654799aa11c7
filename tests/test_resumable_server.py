"""Resumable streams through real gunicorn gevent workers sharing a real
redis-server, read with httpx-sse (and the ``openai`` client): an answer
survives a cut connection and resumes on another server from its
Last-Event-ID, the POST runs once, DELETE stops the generator on whichever
worker runs it, a killed producer ends ``lost``, logs expire."""

from __future__ import annotations

import os
import signal
import time
import typing as t

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from .conftest import Server
from .redis_server import RedisServer

pytestmark = pytest.mark.server

APP = "tests.apps.resumable:app"


@pytest.fixture
def two(start_server: t.Callable[..., Server], redis_server: RedisServer) -> tuple[Server, Server]:
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url, "TEST_REDIS_URL": redis_server.url}
    return start_server(APP, env=env), start_server(APP, env=env, workers=2)


def read(events: t.Any, n: int | None = None) -> list[tuple[str, str, str]]:
    """(event, id, data) of the next ``n`` events of an ``EventSource`` or
    of one's ``iter_sse()`` (all, to the end, if None)."""
    out = []
    for sse in events.iter_sse() if hasattr(events, "iter_sse") else events:
        out.append((sse.event, sse.id, sse.data))
        if n is not None and len(out) == n:
            break
    return out


def test_an_answer_survives_cuts_and_resumes_on_the_other_server(
    two: tuple[Server, Server], redis_server: RedisServer
) -> None:
    one, other = two
    body = {"prompt": "tok", "n": 40, "delay": 0.02}
    got: list[tuple[str, str, str]] = []
    with httpx.Client(timeout=20) as client:
        with connect_sse(client, "POST", f"{one.url}/chat", json=body) as source:
            assert source.response.status_code == 200
            location = source.response.headers["content-location"]
            assert "Content-Location" in source.response.headers["access-control-expose-headers"]
            got += read(source, 5)  # then the connection is cut
        # Resume twice more, alternating servers, each after a few events.
        for server in (other, one):
            headers = {"Last-Event-ID": got[-1][1]}
            with connect_sse(client, "GET", f"{server.url}{location}", headers=headers) as source:
                assert source.response.status_code == 200
                got += read(source, 7)
        with connect_sse(
            client, "GET", f"{other.url}{location}", headers={"Last-Event-ID": got[-1][1]}
        ) as source:
            got += read(source)  # to the end: the response just ends (done)
    sid = location.rsplit("/", 1)[1]
    assert [d for _, _, d in got] == [f"tok {i}" for i in range(40)]
    assert all(e == "message" for e, _, _ in got)
    positions = [int(i.split(".")[1]) for _, i, _ in got]
    assert all(i.split(".")[0] == sid for _, i, _ in got) and positions == sorted(set(positions))
    assert redis_server.admin.get("test:posts") == "1"  # the POST ran once
    assert redis_server.admin.get(f"test:tokens:{sid}") == "40"
    # After the end: a second tab follows the same answer from its start.
    with httpx.Client(timeout=20) as client:
        with connect_sse(client, "GET", f"{one.url}{location}") as source:
            assert [d for _, _, d in read(source)] == [f"tok {i}" for i in range(40)]
        assert client.get(f"{one.url}/evstream/streams/{'x' * 24}").status_code == 404
        assert client.get(f"{one.url}/evstream/streams/bad").status_code == 404
    for server in (one, other):
        assert "Traceback" not in server.log(), server.log()[-3000:]


def test_the_reader_leaving_does_not_stop_the_answer(
    two: tuple[Server, Server], redis_server: RedisServer
) -> None:
    one, _ = two
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client, "POST", f"{one.url}/chat", json={"prompt": "p", "n": 30, "delay": 0.01}
        ) as source:
            location = source.response.headers["content-location"]
            read(source, 1)
        sid = location.rsplit("/", 1)[1]
        deadline = time.monotonic() + 20
        while redis_server.admin.llen("test:finally") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert redis_server.admin.get(f"test:tokens:{sid}") == "30"
        with connect_sse(client, "GET", f"{one.url}{location}") as source:
            assert len(read(source)) == 30


def test_delete_stops_the_generator_wherever_it_runs(
    two: tuple[Server, Server], redis_server: RedisServer
) -> None:
    one, other = two
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client, "POST", f"{one.url}/chat", json={"prompt": "s", "n": 100000, "delay": 0.05}
        ) as source:
            location = source.response.headers["content-location"]
            events = source.iter_sse()
            first = read(events, 2)
            # Stopped through the other server: the reader here gets the ending.
            assert client.delete(f"{other.url}{location}").status_code == 202
            rest = read(events)
        # (no id of its own: a client keeps the last one, as the spec says)
        assert rest[-1][0::2] == ("evstream-end", '{"reason":"cancelled"}')
        sid = location.rsplit("/", 1)[1]
        deadline = time.monotonic() + 10
        while redis_server.admin.llen("test:finally") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert redis_server.admin.lrange("test:finally", 0, -1)[0].startswith(sid)
        tokens = redis_server.admin.get(f"test:tokens:{sid}")
        time.sleep(0.5)
        assert redis_server.admin.get(f"test:tokens:{sid}") == tokens  # no further token
        assert len(first) + len(rest) - 1 <= int(tokens or 0)
        # A late resume gets the same ending.
        with connect_sse(client, "GET", f"{other.url}{location}") as source:
            assert read(source)[-1][0::2] == ("evstream-end", '{"reason":"cancelled"}')


def test_the_authorize_hook_guards_resume_and_cancel(two: tuple[Server, Server]) -> None:
    one, _ = two
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client, "POST", f"{one.url}/chat", json={"prompt": "a", "n": 3, "delay": 0}
        ) as source:
            location = source.response.headers["content-location"]
            read(source)
        bad = {"X-User": "mallory"}
        assert client.get(f"{one.url}{location}", headers=bad).status_code == 403
        assert client.delete(f"{one.url}{location}", headers=bad).status_code == 403


def test_a_killed_producer_ends_lost(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url, "TEST_REDIS_URL": redis_server.url}
    one, other = start_server(APP, env=env), start_server(APP, env=env)
    with httpx.Client(timeout=30) as client:
        with connect_sse(
            client, "POST", f"{one.url}/chat", json={"prompt": "k", "n": 100000, "delay": 0.05}
        ) as source:
            location = source.response.headers["content-location"]
            first = read(source, 2)
        os.kill(one.stats()["pid"], signal.SIGKILL)
        began = time.monotonic()
        with connect_sse(
            client, "GET", f"{other.url}{location}", headers={"Last-Event-ID": first[-1][1]}
        ) as source:
            events = read(source)
        assert events[-1][0::2] == ("evstream-end", '{"reason":"lost"}')
        # Within the documented bound (4 lease periods, 8 s), generously.
        assert time.monotonic() - began < 20


def test_logs_expire_after_the_resume_ttl(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    redis_server.admin.flushall()
    env = {
        "EVSTREAM_BROKER_URL": redis_server.url,
        "TEST_REDIS_URL": redis_server.url,
        "TEST_RESUME_TTL": "1",
    }
    one = start_server(APP, env=env)
    with httpx.Client(timeout=20) as client:
        with connect_sse(client, "GET", f"{one.url}/feed?n=3") as source:
            location = source.response.headers["content-location"]
            assert [d for _, _, d in read(source)] == ["item 0", "item 1", "item 2"]
        assert client.get(f"{one.url}{location}").status_code == 200
        deadline = time.monotonic() + 10
        while client.get(f"{one.url}{location}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert redis_server.admin.keys("evstream:rs:ch:*") == []


def test_a_get_route_resumes_its_own_stream_from_last_event_id(
    two: tuple[Server, Server],
) -> None:
    one, other = two
    with httpx.Client(timeout=20) as client:
        with connect_sse(client, "GET", f"{one.url}/feed?n=10") as source:
            first = read(source, 4)
        # What an EventSource does on reconnect: the same URL, Last-Event-ID.
        with connect_sse(
            client, "GET", f"{other.url}/feed?n=10", headers={"Last-Event-ID": first[-1][1]}
        ) as source:
            rest = read(source)
    assert [d for _, _, d in first + rest] == [f"item {i}" for i in range(10)]


def test_the_openai_client_reads_a_resumable_route(two: tuple[Server, Server]) -> None:
    one, _ = two
    client = openai.OpenAI(base_url=one.url + "/v1", api_key="test", max_retries=0)
    stream = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "hello resumable world"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "hello resumable world"


def test_sigterm_lets_producers_finish_within_graceful_timeout(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> None:
    """The worker ends its readers at once; an answer that finishes within
    graceful_timeout finishes (read on the other server, complete), one that
    does not is closed at the end of it (its finally runs) and ends lost."""
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url, "TEST_REDIS_URL": redis_server.url}
    one = start_server(APP, env={**env, "EVSTREAM_GRACEFUL_TIMEOUT": "4"})
    other = start_server(APP, env=env)
    with httpx.Client(timeout=30) as client:
        locations = []
        for n, delay in ((60, 0.02), (100000, 0.05)):
            with connect_sse(
                client, "POST", f"{one.url}/chat", json={"prompt": "t", "n": n, "delay": delay}
            ) as source:
                locations.append(source.response.headers["content-location"])
                read(source, 1)
        one.proc.send_signal(signal.SIGTERM)
        with connect_sse(client, "GET", f"{other.url}{locations[0]}") as source:
            assert [d for _, _, d in read(source)] == [f"t {i}" for i in range(60)]
        with connect_sse(client, "GET", f"{other.url}{locations[1]}") as source:
            assert read(source)[-1][0::2] == ("evstream-end", '{"reason":"lost"}')
        one.proc.wait(15)
    finished = [line.split()[0] for line in redis_server.admin.lrange("test:finally", 0, -1)]
    assert sorted(finished) == sorted(loc.rsplit("/", 1)[1] for loc in locations)
    assert "closed; they end lost" in one.log()


def test_a_fast_long_answer_arrives_whole(two: tuple[Server, Server]) -> None:
    """Events written in batches and delivered live right after the replay
    (some twice, dropped by the reader) are not silence: no spurious lost."""
    one, _ = two
    with httpx.Client(timeout=60) as client:
        for _ in range(4):
            with connect_sse(client, "GET", f"{one.url}/fast?n=9000") as source:
                events = read(source)
            assert [d for _, _, d in events] == [f"f{i}" for i in range(9000)]


def test_a_redis_outage_during_an_answer_ends_it_failed_and_runs_its_finally(
    start_server: t.Callable[..., Server], redis_server: RedisServer, tmp_path: t.Any
) -> None:
    """The log's Redis dies mid-answer: the reader that started it (fed by
    the producer) gets the ``failed`` ending, not a hang or a cut; the
    generator is stopped and its ``finally`` runs; a resume is a 503."""
    redis_server.admin.flushall()
    (tmp_path / "outage").mkdir()
    broker = RedisServer(tmp_path / "outage")
    try:
        env = {"EVSTREAM_BROKER_URL": broker.url, "TEST_REDIS_URL": redis_server.url}
        server = start_server(APP, env=env)
        body = {"prompt": "tok", "n": 2000, "delay": 0.01}
        with httpx.Client(timeout=30) as client:
            with connect_sse(client, "POST", f"{server.url}/chat", json=body) as source:
                location = source.response.headers["content-location"]
                stream = source.iter_sse()
                got = read(stream, 3)
                broker.kill()
                got += read(stream)
            sid = location.rsplit("/", 1)[1]
            # (the ending has no id: a client keeps the last one, per the spec)
            assert (got[-1][0], got[-1][2]) == ("evstream-end", '{"reason":"failed"}')
            datas = [data for _, _, data in got[:-1]]
            assert datas == [f"tok {i}" for i in range(len(datas))] and len(datas) < 2000
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if any(x.startswith(sid) for x in redis_server.admin.lrange("test:finally", 0, -1)):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the generator's finally did not run")
            assert client.get(f"{server.url}{location}").status_code == 503
            assert client.get(f"{server.url}/stats").json()["producers"] == 0
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("delay", "refused"),
    [(0.01, "cannot write its log"), (60, "cannot write its lease")],
    ids=["while-writing", "while-quiet"],
)
def test_a_foreign_key_over_the_log_ends_the_answer_failed_with_one_clear_error(
    start_server: t.Callable[..., Server], redis_server: RedisServer, delay: float, refused: str
) -> None:
    """Another program overwrites the log's key mid-answer: the next write
    to it (the writer's append, or the lease of a generator gone quiet), then
    the ending's, are refused (WRONGTYPE). The answer ends ``failed`` for
    its reader, the generator's ``finally`` runs, and the worker logs why,
    without a traceback from a greenlet that died on it."""
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url, "TEST_REDIS_URL": redis_server.url}
    server = start_server(APP, env=env)
    body = {"prompt": "tok", "n": 2000, "delay": delay}
    with httpx.Client(timeout=30) as client:
        with connect_sse(client, "POST", f"{server.url}/chat", json=body) as source:
            sid = source.response.headers["content-location"].rsplit("/", 1)[1]
            stream = source.iter_sse()
            got = read(stream, 1)
            (key,) = redis_server.admin.keys(f"*ch:rs:{{{sid}}}")
            redis_server.admin.set(key, "another program's value")
            got += read(stream)
        assert (got[-1][0], got[-1][2]) == ("evstream-end", '{"reason":"failed"}')
        datas = [data for _, _, data in got[:-1]]
        assert datas == [f"tok {i}" for i in range(len(datas))] and len(datas) < 2000
        deadline = time.monotonic() + 10
        while client.get(f"{server.url}/stats").json()["producers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(f"{server.url}/stats").json()["producers"] == 0
        # A resume finds no log to read: after the silence that means a dead
        # producer, it ends lost, whole (not cut), as the worker logs.
        resume = f"{server.url}/evstream/streams/{sid}"
        with connect_sse(client, "GET", resume, headers={"Last-Event-ID": got[0][1]}) as source:
            assert read(source) == [("evstream-end", "", '{"reason":"lost"}')]
    assert any(x.startswith(sid) for x in redis_server.admin.lrange("test:finally", 0, -1))
    log = server.log()
    assert f"Resumable stream {sid} {refused}" in log, log
    assert f"Resumable stream {sid}: its log cannot be written" in log, log
    assert "Traceback" not in log, log
