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


def test_a_fast_generator_is_logged_in_runs_bounded_by_max_buffer() -> None:
    """3,000 events made at once go to the log as a few runs, none above
    EVSTREAM_MAX_BUFFER; the first response, a resume from the start and a
    resume from every position in the middle of a run get exactly the
    bytes of the events after it, with ids 1 to 3,000."""
    from flask_evstream.resumable import _DATA, log_channel

    app, sse = make_app(EVSTREAM_MAX_BUFFER=4096, EVSTREAM_RESUME_MAX_EVENTS=5000)

    @app.post("/fast")
    @sse_route(resumable=True)
    def fast() -> t.Iterator[t.Any]:
        for i in range(3000):
            yield {"n": i} if i % 3 else f"line {i}\nsecond"

    client = app.test_client()
    response = client.post("/fast")
    first = body(response)
    url = response.headers["Content-Location"]
    got = events(first)
    sid = url.rsplit("/", 1)[1]
    assert [e["id"] for e in got] == [f"{sid}.{n}" for n in range(1, 3001)]
    wait_no_producers()
    logs = app.extensions["evstream"].logs()
    kept, _ = logs.history([log_channel(sid)], 0)
    runs = [event for _, event in kept if event.event == _DATA]
    assert 1 < len(runs) < 3000 / 10  # batched, and cut by max_buffer
    for run in runs:
        head, _, wire = run.data.partition("\n")
        first_pos, last_pos = map(int, head.split())
        assert len(wire.encode()) <= 4096 or first_pos == last_pos
    # Resume from positions at the start, inside and at the end of runs.
    blocks = first.split("\n\n")[:-1]
    for after in (0, 1, 2, 57, 58, 1499, 2999, 3000):
        again = client.get(url, headers={"Last-Event-ID": f"{sid}.{after}"} if after else {})
        if after == 3000:
            assert again.status_code == 204
            continue
        text = body(again)
        want = "".join(b + "\n\n" for b in blocks if b.startswith("id: ") and
                       int(b.split("\n", 1)[0].rsplit(".", 1)[1]) > after)  # fmt: skip
        assert text.lstrip(": \n") == want, after


def test_a_resume_inside_a_run_starts_at_the_next_event() -> None:
    """LogReader on a log of hand-made runs: after a position in the middle
    of a run, the exact bytes from the next event on (an event with a type,
    whose id line comes first, included)."""
    from flask_evstream.brokers.memory import MemoryBroker
    from flask_evstream.resumable import _DATA, _DONE, LogReader, log_channel, log_entry

    broker = MemoryBroker(history=100)
    sid = "r" * 24

    def wire(n: int) -> bytes:
        kind = "event: tool\n" if n % 2 else ""
        return f"id: {sid}.{n}\n{kind}data: e{n}\ndata: id: {sid}.{n + 1}\n\n".encode()

    broker.publish(
        log_channel(sid), log_entry(1, 3, wire(1) + wire(2) + wire(3)), event=_DATA, id=None
    )
    broker.publish(log_channel(sid), log_entry(4, 5, wire(4) + wire(5)), event=_DATA, id=None)
    broker.publish(log_channel(sid), "5", event=_DONE, id=None)
    for after in range(6):
        reader = LogReader(broker, sid, after=after, queue_size=100, max_buffer=65536)
        reader.wait_started(0)
        out = b""
        while (chunk := reader.take(1)) not in (b"", None):
            out += chunk
        assert out == b"".join(wire(n) for n in range(after + 1, 6)), after
        reader.close()


def test_the_first_response_is_fed_by_its_producer_and_detaches_on_close() -> None:
    """The response that starts a stream reads from its producer, not the
    broker (no subscriber registered for the log); closing it detaches it,
    and the producer runs on to its end."""
    import threading

    from flask_evstream.resumable import _producers

    app, _ = make_app()
    go = threading.Event()

    @app.post("/slow")
    @sse_route(resumable=True)
    def slow() -> t.Iterator[str]:
        yield "first"
        go.wait(10)
        yield "second"

    client = app.test_client()
    response = client.post("/slow")
    chunks = iter(response.response)
    text = ""
    while "first" not in text:
        text += next(chunks).decode()
    (producer,) = list(_producers)
    assert len(producer._local) == 1
    hub = app.extensions["evstream"].logs().hub
    assert hub.count() == 1  # the producer's stop watcher only, not the reader
    response.close()
    assert producer._local == [] and producers() == 1
    go.set()
    wait_no_producers()
    sid = response.headers["Content-Location"].rsplit("/", 1)[1]
    assert [e["data"] for e in events(body(client.get(f"/evstream/streams/{sid}")))] == [
        "first",
        "second",
    ]
