"""Resumable streams in process (memory broker, threads, Flask's test
client): endings, caps, the request context of a detached producer, ids,
and bad input."""

from __future__ import annotations

import json
import time
import typing as t

import pytest
from flask import Flask, abort, g, request, session

from flask_evstream import EvStream, sse_route
from flask_evstream.resumable import parse_resume_id, producers


def make_app(**config: t.Any) -> tuple[Flask, EvStream]:
    app = Flask(__name__)
    app.secret_key = "test"
    app.config.update(config)
    sse = EvStream(app)
    return app, sse


def body(response: t.Any) -> str:
    return b"".join(response.response).decode()


def events(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            out.append(fields)
    return out


def wait_no_producers() -> None:
    deadline = time.monotonic() + 10
    while producers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producers() == 0


def test_done_failed_and_expired_endings(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app(EVSTREAM_RESUME_MAX_AGE=0.3)

    @app.get("/done")
    @sse_route(resumable=True)
    def done() -> t.Iterator[str]:
        yield "a"
        yield "b"

    @app.get("/fails")
    @sse_route(resumable=True)
    def fails() -> t.Iterator[str]:
        yield "a"
        raise RuntimeError("model crashed")

    @app.get("/forever")
    @sse_route(resumable=True)
    def forever() -> t.Iterator[str]:
        while True:
            yield "tick"
            time.sleep(0.05)

    client = app.test_client()
    got = events(body(client.get("/done")))
    assert [e["data"] for e in got] == ["a", "b"]  # done: the response just ends
    got = events(body(client.get("/fails")))
    assert got[-1] == {"event": "evstream-end", "data": '{"reason":"failed"}'}
    assert "Exception in resumable stream" in caplog.text and "model crashed" in caplog.text
    got = events(body(client.get("/forever")))
    assert got[-1] == {"event": "evstream-end", "data": '{"reason":"expired"}'}
    assert 2 <= len(got) - 1 <= 20
    wait_no_producers()


def test_past_the_event_cap_the_stream_fails_with_a_clear_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = make_app(EVSTREAM_RESUME_MAX_EVENTS=10)

    @app.get("/long")
    @sse_route(resumable=True)
    def long() -> t.Iterator[int]:
        yield from range(100)

    got = events(body(app.test_client().get("/long")))
    assert [e["data"] for e in got[:-1]] == [str(i) for i in range(7)]
    assert got[-1]["data"] == '{"reason":"failed"}'
    assert "went past EVSTREAM_RESUME_MAX_EVENTS (10 events" in caplog.text


def test_an_early_abort_is_the_response() -> None:
    app, _ = make_app()

    @app.get("/private")
    @sse_route(resumable=True)
    def private() -> t.Iterator[str]:
        abort(403)
        yield "never"

    assert app.test_client().get("/private").status_code == 403
    wait_no_producers()


def test_the_producer_keeps_request_g_and_session_after_the_reader_left() -> None:
    app, _ = make_app()
    seen: list[t.Any] = []

    @app.post("/login")
    def login() -> t.Any:
        session["user"] = "ada"
        return "", 204

    @app.post("/chat")
    @sse_route(resumable=True)
    def chat() -> t.Iterator[str]:
        g.tag = "from the view"
        prompt = request.get_json()["prompt"]
        yield prompt
        time.sleep(0.2)  # the reader is gone by now
        seen.append((request.get_json()["prompt"], g.tag, session.get("user"), request.path))
        yield "more"

    client = app.test_client()
    client.post("/login")
    response = client.post("/chat", json={"prompt": "hi"}, buffered=False)
    first = next(iter(response.response))
    assert b"data: hi" in first
    response.close()
    wait_no_producers()
    assert seen == [("hi", "from the view", "ada", "/chat")]


def test_ids_name_the_stream_and_resume_continues_after_them() -> None:
    app, sse = make_app()

    @app.get("/feed")
    @sse_route(resumable=True)
    def feed() -> t.Iterator[dict[str, int]]:
        for i in range(5):
            yield {"i": i}

    client = app.test_client()
    response = client.get("/feed")
    location = response.headers["Content-Location"]
    got = events(body(response))
    sid = location.rsplit("/", 1)[1]
    assert len(sid) == 24 and all(e["id"].startswith(sid + ".") for e in got)
    assert [json.loads(e["data"]) for e in got] == [{"i": i} for i in range(5)]
    assert parse_resume_id(got[1]["id"]) == (sid, int(got[1]["id"].split(".")[1]))
    resumed = events(body(client.get(location, headers={"Last-Event-ID": got[1]["id"]})))
    assert resumed == got[2:]
    # Another stream's id on this resume URL starts from the first event.
    assert events(body(client.get(location, headers={"Last-Event-ID": "x" * 24 + ".1"}))) == got
    assert sse.cancel(sid) is True  # known (ended: nothing to stop)
    assert sse.cancel("y" * 24) is False
    assert sse.cancel("../etc") is False


@pytest.mark.parametrize(
    "text", [None, "", "5", "abc.5", "x" * 24, "x" * 24 + ".", "x" * 24 + ".²", "x" * 65 + ".1"]
)
def test_foreign_ids_are_not_resume_ids(text: str | None) -> None:
    assert parse_resume_id(text) is None


def test_bad_settings_and_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="EVSTREAM_RESUME_TTL must be a number of seconds above 0"):
        make_app(EVSTREAM_RESUME_TTL=0)
    with pytest.raises(ValueError, match="EVSTREAM_URL_PREFIX must be a path like /evstream"):
        make_app(EVSTREAM_URL_PREFIX="evstream/")
    with pytest.raises(ValueError, match="EVSTREAM_RESUME_MAX_EVENTS must be an integer"):
        make_app(EVSTREAM_RESUME_MAX_EVENTS=5)
    with pytest.raises(TypeError, match="sse_route resumable must be a bool, got 'yes'"):
        sse_route(resumable="yes")  # type: ignore[call-overload]
    app = Flask(__name__)
    app.testing = True

    @app.get("/x")
    @sse_route(resumable=True)
    def x() -> t.Iterator[str]:
        yield "a"

    with pytest.raises(RuntimeError, match="needs the EvStream extension"):
        app.test_client().get("/x")


def test_a_wake_up_for_an_event_already_replayed_is_not_silence() -> None:
    """Right after its replay a reader may be woken for events it already
    sent (they come live too, and are dropped): that is no sign of a dead
    producer. Lockstep: a duplicate wakes the reader, then a new event
    comes; the reader sends the new event, not the lost ending."""
    import threading

    from flask_evstream.brokers.memory import MemoryBroker
    from flask_evstream.resumable import _DATA, LogReader, log_channel, log_entry

    broker = MemoryBroker(history=100)
    sid = "s" * 24
    channel = log_channel(sid)

    def run(position: int, text: str) -> str:
        return log_entry(position, position, f"id: {sid}.{position}\ndata: {text}\n\n".encode())

    first = broker.publish(channel, run(1, "one"), event=_DATA, id=None)
    reader = LogReader(broker, sid, after=0, queue_size=100, max_buffer=65536, lost_after=5.0)
    reader.wait_started(0)
    assert reader.take(0) == f"id: {sid}.1\ndata: one\n\n".encode()
    duplicate = broker._events[channel][0][1]
    sent = threading.Event()

    def later() -> None:
        broker.hub.deliver(channel, first, duplicate)  # wakes the reader, nothing new
        time.sleep(0.2)
        broker.publish(channel, run(2, "two"), event=_DATA, id=None)
        sent.set()

    threading.Thread(target=later).start()
    chunk = reader.take(30)
    while chunk is None:
        chunk = reader.take(30)
    assert chunk == f"id: {sid}.2\ndata: two\n\n".encode()
    assert sent.wait(5)
    reader.close()
