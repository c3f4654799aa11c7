"""Streams served by a real gunicorn with gevent workers, read over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import typing as t

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from .conftest import Server
from .sockets import RawStream

pytestmark = pytest.mark.server


def sse_events(server: Server, method: str, path: str, **kwargs: t.Any) -> list[t.Any]:
    """Read a whole stream with httpx-sse (a parser nobody here wrote)."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        with connect_sse(client, method, path, **kwargs) as source:
            return list(source.iter_sse())


def test_headers(gevent_server: Server) -> None:
    with httpx.stream("GET", gevent_server.url + "/events?n=1", timeout=10) as response:
        body = response.read()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    cache = [v.strip() for v in response.headers["cache-control"].split(",")]
    assert "no-cache" in cache and "no-store" in cache and "no-transform" in cache
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-length" not in response.headers
    assert body == b'data: {"i":0}\n\n'


def test_events_exact_bytes_over_http10(gevent_server: Server) -> None:
    stream = RawStream(gevent_server.url, "/events?n=3")
    assert stream.status == 200
    body = stream.read_to_end()
    stream.close()
    assert body == b'data: {"i":0}\n\ndata: {"i":1}\n\ndata: {"i":2}\n\n'


def test_each_event_leaves_when_yielded(gevent_server: Server) -> None:
    """The generator waits after each event until the client confirms it got
    that event: any buffering between generator and socket would hang here."""
    name = f"lock{time.monotonic_ns()}"
    stream = RawStream(gevent_server.url, f"/lockstep/{name}?n=4")
    for i in range(4):
        block, _ = stream.read_event()
        assert block == f'data: {{"i":{i}}}\n\n'.encode()
        assert httpx.post(f"{gevent_server.url}/release/{name}-{i}").status_code == 204
    assert stream.read_to_end() == b""
    stream.close()


def arrive_before_the_next_is_made(arrivals: list[tuple[dict[str, t.Any], float]]) -> None:
    """Each event reached the client before the generator yielded the next
    one (an event held back until the next yield fails this, whatever the
    machine's speed; the bench measures lateness itself)."""
    for (data, arrived), (following, _) in zip(arrivals, arrivals[1:]):
        assert arrived < following["sent"], (data, arrived, following)


def read_timed(stream: RawStream, n: int) -> list[tuple[dict[str, t.Any], float]]:
    arrivals = []
    for _ in range(n):
        block, _ = stream.read_event()
        arrivals.append((json.loads(block.removeprefix(b"data: ")), time.time()))
    return arrivals


def test_paced_events_arrive_apart(gevent_server: Server) -> None:
    """Events yielded 200 ms apart arrive one by one."""
    stream = RawStream(gevent_server.url, "/paced?n=5&gap=0.2")
    arrivals = read_timed(stream, 5)
    stream.close()
    arrive_before_the_next_is_made(arrivals)


def test_cpu_bound_producer_events_are_not_held_back(gevent_server: Server) -> None:
    """Events 150 ms of computing apart, with no greenlet switch between."""
    stream = RawStream(gevent_server.url, "/cpu")
    arrivals = read_timed(stream, 4)
    stream.close()
    arrive_before_the_next_is_made(arrivals)


def test_heartbeat_while_generator_blocks(gevent_server: Server) -> None:
    """TEST_HEARTBEAT is 0.5 s: a generator that never yields still gets a
    comment on the wire about every 0.5 s, and nothing else."""
    stream = RawStream(gevent_server.url, "/quiet")
    assert stream.read_until(b":\n") == b":\n"  # the opening, sent at once
    times = []
    for _ in range(3):
        assert stream.read_until(b"\n") == b": ping\n"
        times.append(time.monotonic())
    stream.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.3 < gap < 1.5 for gap in gaps), gaps


def test_disconnect_runs_finally_and_frees_everything(gevent_server: Server) -> None:
    before = gevent_server.wait_stats(lambda s: s["live"] == 0, 5)
    stream = RawStream(gevent_server.url, "/blocked")
    assert stream.read_event()[0] == b"retry: 1000\nevent: status\ndata: started\n\n"
    during = gevent_server.stats()
    assert during["live"] == 1
    assert during["greenlets"] > before["greenlets"]
    closed_at = time.monotonic()
    stream.close()
    # Within two heartbeat intervals (0.5 s each) plus slack for this machine.
    after = gevent_server.wait_stats(
        lambda s: s["finally_count"] > before["finally_count"] and s["live"] == 0, 3
    )
    took = time.monotonic() - closed_at
    assert after["finally_count"] == before["finally_count"] + 1
    assert after["live"] == 0
    assert after["greenlets"] == before["greenlets"], "a greenlet outlived its stream"
    assert took < 3


def test_last_event_id_continues(gevent_server: Server) -> None:
    events = sse_events(gevent_server, "GET", "/resume")
    assert [(e.id, e.json()) for e in events] == [
        ("1", {"step": 1}),
        ("2", {"step": 2}),
        ("3", {"step": 3}),
    ]
    events = sse_events(gevent_server, "GET", "/resume", headers={"Last-Event-ID": "41"})
    assert [(e.id, e.json()) for e in events] == [
        ("42", {"step": 42}),
        ("43", {"step": 43}),
        ("44", {"step": 44}),
    ]
    # What EventSource polyfills send instead of the header.
    events = sse_events(gevent_server, "GET", "/resume?lastEventId=7")
    assert [e.id for e in events] == ["8", "9", "10"]


def test_204_and_401_pass_through(gevent_server: Server) -> None:
    response = httpx.get(gevent_server.url + "/maybe?stop=1")
    assert response.status_code == 204
    assert "text/event-stream" not in response.headers.get("content-type", "")
    response = httpx.get(gevent_server.url + "/maybe?auth=1")
    assert response.status_code == 401
    assert response.text == "log in first"
    assert [e.data for e in sse_events(gevent_server, "GET", "/maybe")] == ["go"]


def test_abort_before_first_event_is_an_error_response(gevent_server: Server) -> None:
    response = httpx.get(gevent_server.url + "/forbidden")
    assert response.status_code == 403
    assert "text/event-stream" not in response.headers["content-type"]


def test_post_streaming(gevent_server: Server) -> None:
    events = sse_events(gevent_server, "POST", "/chat", json={"prompt": "one two three"})
    assert [e.data for e in events] == [
        '{"token":"one"}',
        '{"token":"two"}',
        '{"token":"three"}',
        "[DONE]",
    ]


def test_openai_client_reads_our_stream(gevent_server: Server) -> None:
    client = openai.OpenAI(base_url=gevent_server.url + "/v1", api_key="test", max_retries=0)
    stream = client.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "hello streaming world"}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "hello streaming world"


def test_request_context_lives_as_long_as_the_stream(gevent_server: Server) -> None:
    with httpx.Client(base_url=gevent_server.url, timeout=10) as client:
        assert client.post("/login", data={"user": "ada"}).status_code == 204
        with connect_sse(client, "GET", "/context?v=x") as source:
            events = [e.json() for e in source.iter_sse()]
    assert events == [
        {"arg": "x", "g": "x", "user": "ada"},
        {"app": "tests.apps.streams", "g": "x", "path": "/context", "user": "ada"},
    ]


def test_exception_mid_stream_is_logged_and_ends_only_that_stream(
    gevent_server: Server,
) -> None:
    pid = gevent_server.stats()["pid"]
    stream = RawStream(gevent_server.url, "/boom")
    assert stream.read_to_end() == b"data: one\n\ndata: two\n\n"
    stream.close()
    log = gevent_server.wait_stats(lambda s: True, 0) and gevent_server.log()
    assert "Exception in event stream" in log
    assert "RuntimeError: boom in the generator" in log
    assert "Traceback" in log
    # The same worker serves on.
    assert gevent_server.stats()["pid"] == pid
    assert [e.data for e in sse_events(gevent_server, "GET", "/events?n=1")] == ['{"i":0}']


def bare_freeze_count() -> int:
    """``gc.get_freeze_count()`` of this Python started with nothing loaded."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import gc; print(gc.get_freeze_count())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_worker_freezes_what_it_loaded_unless_told_not_to(
    gevent_server: Server, start_server: t.Callable[..., Server]
) -> None:
    bare = bare_freeze_count()
    # Flask, werkzeug, gevent and the app: tens of thousands of objects,
    # left out of every later collection.
    assert gevent_server.stats()["gc_frozen"] > bare + 10_000
    # ... and given back at exit: the interpreter's teardown stays clean.
    frozen = start_server()
    assert frozen.stats()["gc_frozen"] > bare + 10_000
    frozen.stop()
    assert "Worker exiting" in frozen.log()
    assert "Traceback" not in frozen.log(), frozen.log()
    # Told not to, it freezes nothing: the count is the bare interpreter's
    # (not 0 on every Python: 3.12.1 starts with 375, even with -I -S).
    server = start_server(env={"EVSTREAM_GC_FREEZE": "0"})
    assert server.stats()["gc_frozen"] == bare
    assert [e.data for e in sse_events(server, "GET", "/events?n=1")] == ['{"i":0}']


def test_gc_freeze_setting_is_checked() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import flask_evstream.gunicorn_conf"],
        env={**os.environ, "EVSTREAM_GC_FREEZE": "yes"},
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "ValueError: EVSTREAM_GC_FREEZE must be 0 or 1, got 'yes'" in out.stderr


@pytest.mark.slow
def test_one_worker_holds_1000_streams(start_server: t.Callable[..., Server]) -> None:
    server = start_server(env={"TEST_HEARTBEAT": "2"})
    streams = []
    try:
        for _ in range(1000):
            streams.append(RawStream(server.url, "/quiet", timeout=30, wait=False))
        for s in streams:
            s.read_head()
        assert all(s.status == 200 for s in streams)
        for s in streams:
            assert s.read_until(b":\n") == b":\n"
        stats = server.wait_stats(lambda s: s["live"] == 1000, 10)
        assert stats["live"] == 1000
        assert stats["started"] == 1000
        # A stream opened now is still served at once.
        assert [e.data for e in sse_events(server, "GET", "/events?n=1")] == ['{"i":0}']
        # Heartbeats flow to all of them.
        for s in streams[::50]:
            assert s.read_until(b": ping\n").endswith(b": ping\n")
    finally:
        for s in streams:
            s.close()
    stats = server.wait_stats(lambda s: s["live"] == 0 and s["finally_count"] == 1000, 20)
    assert stats["live"] == 0
    assert stats["finally_count"] == 1000


def test_sigterm_ends_open_streams_and_the_worker_exits_promptly(
    start_server: t.Callable[..., Server],
) -> None:
    server = start_server(env={"TEST_HEARTBEAT": "5", "EVSTREAM_GRACEFUL_TIMEOUT": "30"})
    streams = [RawStream(server.url, "/blocked") for _ in range(20)]
    for s in streams:
        s.read_event()
    assert server.wait_stats(lambda s: s["live"] == 20, 5)["live"] == 20
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for s in streams:
        # The server ends each response: the client sees the end of the body.
        assert s.read_to_end() == b""
        assert s.closed_by_server
        s.close()
    server.proc.wait(30)
    took = time.monotonic() - sent
    # graceful_timeout is 30 s; without ending the streams the worker would
    # wait all of it. The gevent worker checks every second.
    assert took < 10, f"worker took {took:.1f} s to exit"
    log = server.log()
    assert "Worker graceful timeout" not in log
    assert "Worker exiting" in log


def test_gthread_worker_streams_and_cleans_up(start_server: t.Callable[..., Server]) -> None:
    server = start_server(worker="gthread")
    events = sse_events(server, "GET", "/resume", headers={"Last-Event-ID": "2"})
    assert [e.id for e in events] == ["3", "4", "5"]
    assert [e.data for e in sse_events(server, "POST", "/chat", json={"prompt": "a b"})] == [
        '{"token":"a"}',
        '{"token":"b"}',
        "[DONE]",
    ]
    name = f"lock{time.monotonic_ns()}"
    stream = RawStream(server.url, f"/lockstep/{name}?n=2")
    for i in range(2):
        assert stream.read_event()[0] == f'data: {{"i":{i}}}\n\n'.encode()
        httpx.post(f"{server.url}/release/{name}-{i}")
    stream.close()
    # Under threads a generator blocked in a call is closed when it next
    # yields; this one sleeps between events, so it ends soon.
    stream = RawStream(server.url, "/paced?n=100&gap=0.1")
    stream.read_event()
    stream.close()
    stats = server.wait_stats(lambda s: s["live"] == 0, 5)
    assert stats["live"] == 0


def test_streams_opened_while_stopping_are_ended_too(
    start_server: t.Callable[..., Server],
) -> None:
    """A client reconnecting right after SIGTERM can land on the stopping
    worker before it closes its listener; that stream must end as well."""
    server = start_server(env={"TEST_HEARTBEAT": "5", "EVSTREAM_GRACEFUL_TIMEOUT": "30"})
    first = RawStream(server.url, "/blocked")
    first.read_event()
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    late = []
    for _ in range(5):
        try:
            late.append(RawStream(server.url, "/blocked", timeout=15))
        except OSError:
            break  # the listener is closed: nothing more to end
        time.sleep(0.05)
    for s in [first, *late]:
        s.read_to_end()
        assert s.closed_by_server
        s.close()
    server.proc.wait(30)
    assert time.monotonic() - sent < 10
    assert "Worker graceful timeout" not in server.log()


def test_max_requests_restart_ends_streams(start_server: t.Callable[..., Server]) -> None:
    """gunicorn's max_requests stops a worker without a signal."""
    server = start_server(
        env={
            "TEST_HEARTBEAT": "5",
            "EVSTREAM_GRACEFUL_TIMEOUT": "30",
            "GUNICORN_CMD_ARGS": "--max-requests 5",
        }
    )
    pid = server.stats()["pid"]
    stream = RawStream(server.url, "/blocked")
    stream.read_event()
    started = time.monotonic()
    for _ in range(5):
        httpx.get(server.url + "/stats", timeout=10)
    stream.read_to_end()
    assert stream.closed_by_server
    stream.close()
    assert time.monotonic() - started < 10
    assert server.wait_stats(lambda s: s["pid"] != pid, 15)["pid"] != pid
    assert "Worker graceful timeout" not in server.log()


def test_gthread_close_does_not_hold_the_server_thread(
    start_server: t.Callable[..., Server],
) -> None:
    """One server thread; a generator blocked in a call (a gate that stays
    shut) and its client leaves. The server thread must be free at once
    (closing used to wait 5 s for the generator), and the generator's own
    thread closes it (its finally runs) when the call returns."""
    server = start_server(worker="gthread", threads=1)
    before = server.stats()
    stream = RawStream(server.url, "/quiet")
    assert stream.read_until(b":\n") == b":\n"
    stream.close()
    # The next heartbeat (0.5 s) finds the client gone and closes the
    # stream; only then can the one thread answer. Held for 5 s by the
    # close, this request would time out.
    response = httpx.get(f"{server.url}/stats", timeout=3)
    assert response.status_code == 200
    stats = server.wait_stats(lambda s: s["live"] == 0, 3)
    assert stats["live"] == 0
    assert stats["finally_count"] == before["finally_count"]  # still blocked
    assert httpx.post(f"{server.url}/release/never", timeout=3).status_code == 204
    stats = server.wait_stats(lambda s: s["finally_count"] > before["finally_count"], 3)
    assert stats["finally_count"] == before["finally_count"] + 1
