"""sse_route, EvStream and the testing helpers, in process (thread backend)."""

from __future__ import annotations

import logging
import threading
import time
import types
import typing as t
import wsgiref.validate

import pytest
from flask import Flask, Response, abort, g, request, session
from werkzeug.test import Client

import flask_evstream
from flask_evstream import Event, EvStream, last_event_id, live_streams, sse_route
from flask_evstream.testing import iter_events, read_events


def test_public_api() -> None:
    assert flask_evstream.__all__ == [
        "END_EVENT",
        "GAP_EVENT",
        "BrokerUnavailable",
        "EvStream",
        "Event",
        "Subscription",
        "end_streams",
        "last_event_id",
        "live_streams",
        "parse_event_id",
        "producers",
        "sse_route",
        "stream_id",
        "subscribers",
    ]
    public = {
        name
        for name, value in vars(flask_evstream).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(flask_evstream.__all__)


def test_items_become_events(app: Flask, client: t.Any) -> None:
    @app.get("/s")
    @sse_route()
    def s() -> t.Iterator[t.Any]:
        yield "text"
        yield {"a": [1, 2]}
        yield 3
        yield Event("x", event="e", id="i")

    response = client.get("/s")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.get_data() == (
        b'data: text\n\ndata: {"a":[1,2]}\n\ndata: 3\n\nevent: e\nid: i\ndata: x\n\n'
    )


def test_bare_decorator_and_retry(app: Flask, client: t.Any) -> None:
    @app.get("/bare")
    @sse_route
    def bare() -> t.Iterator[str]:
        yield "a"

    @app.get("/retry")
    @sse_route(retry=3000)
    def retry() -> t.Iterator[str]:
        yield "a"

    assert client.get("/bare").get_data() == b"data: a\n\n"
    assert client.get("/retry").get_data() == b"retry: 3000\ndata: a\n\n"
    assert read_events(client.get("/retry")) == [Event("a", retry=3000)]


def test_config_retry_and_explicit_retry_zero(app: Flask) -> None:
    app.config["EVSTREAM_RETRY"] = 5000

    @app.get("/a")
    @sse_route()
    def a() -> t.Iterator[str]:
        yield "a"

    @app.get("/b")
    @sse_route(retry=0)
    def b() -> t.Iterator[str]:
        yield "b"

    # EVSTREAM_RETRY set after init_app is read when the app has no extension.
    other = Flask("other")
    other.config["EVSTREAM_RETRY"] = 5000
    other.add_url_rule("/a", view_func=a)
    other.add_url_rule("/b", view_func=b, endpoint="b")
    assert other.test_client().get("/a").get_data() == b"retry: 5000\ndata: a\n\n"
    assert other.test_client().get("/b").get_data() == b"retry: 0\ndata: b\n\n"


def test_ids_number_events_and_resume(app: Flask, client: t.Any) -> None:
    @app.get("/ids")
    @sse_route(ids=True)
    def ids() -> t.Iterator[t.Any]:
        last = last_event_id() or "0"
        start = int(last) if last.isdigit() else 0
        yield {"n": start + 1}
        yield Event(comment="not numbered")
        yield Event({"n": start + 2}, id="own")
        yield {"n": start + 2}

    assert client.get("/ids").get_data() == (
        b'id: 1\ndata: {"n":1}\n\n: not numbered\n'
        b'id: own\ndata: {"n":2}\n\nid: 2\ndata: {"n":2}\n\n'
    )
    events = read_events(client.get("/ids", headers={"Last-Event-ID": "10"}))
    assert [(e.id, e.data) for e in events] == [
        ("11", '{"n":11}'),
        ("own", '{"n":12}'),
        ("12", '{"n":12}'),
    ]
    # A Last-Event-ID that is not one of ours numbers from 1.
    events = read_events(client.get("/ids", headers={"Last-Event-ID": "abc"}))
    assert events[0].id == "1"


def test_last_event_id_sources(app: Flask) -> None:
    with app.test_request_context("/", headers={"Last-Event-ID": "5"}):
        assert last_event_id() == "5"
    with app.test_request_context("/?lastEventId=6"):
        assert last_event_id() == "6"
    with app.test_request_context("/?lastEventId=6", headers={"Last-Event-ID": "5"}):
        assert last_event_id() == "5"
    with app.test_request_context("/", headers={"Last-Event-ID": ""}):
        assert last_event_id() is None
    with app.test_request_context("/"):
        assert last_event_id() is None


def test_passthrough(app: Flask, client: t.Any) -> None:
    @app.get("/p/<kind>")
    @sse_route()
    def p(kind: str) -> t.Any:
        if kind == "204":
            return "", 204
        if kind == "response":
            return Response("nope", status=401, headers={"WWW-Authenticate": "Bearer"})
        if kind == "dict":
            return {"error": "x"}
        return iter(["streamed"])

    r = client.get("/p/204")
    assert r.status_code == 204 and r.mimetype != "text/event-stream"
    r = client.get("/p/response")
    assert (r.status_code, r.get_data(), r.headers["WWW-Authenticate"]) == (401, b"nope", "Bearer")
    assert client.get("/p/dict").get_json() == {"error": "x"}
    assert client.get("/p/other").get_data() == b"data: streamed\n\n"


def test_abort_before_first_event_gives_the_error_response(app: Flask, client: t.Any) -> None:
    @app.get("/f")
    @sse_route()
    def f() -> t.Iterator[str]:
        abort(403)
        yield "never"

    @app.post("/bad")
    @sse_route()
    def bad() -> t.Iterator[str]:
        yield request.get_json()["prompt"]

    assert client.get("/f").status_code == 403
    assert client.post("/bad", data="not json", content_type="application/json").status_code == 400
    assert client.post("/bad", json={"prompt": "hi"}).get_data() == b"data: hi\n\n"


def test_exception_mid_stream_is_logged_and_ends_the_stream(
    app: Flask, client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    @sse_route()
    def boom() -> t.Iterator[str]:
        yield "one"
        raise ValueError("kaput")

    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        assert client.get("/boom").get_data() == b"data: one\n\n"
    [record] = [r for r in caplog.records if "Exception in event stream" in r.getMessage()]
    assert record.exc_info is not None and "kaput" in str(record.exc_info[1])


def test_bad_item_is_a_logged_type_error(
    app: Flask, client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/bytes")
    @sse_route()
    def raw() -> t.Iterator[t.Any]:
        yield "ok"
        yield b"raw bytes"

    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        assert client.get("/bytes").get_data() == b"data: ok\n\n"
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], TypeError)
    assert "got bytes" in str(record.exc_info[1])


def test_request_context_and_teardown_last_as_long_as_the_stream(app: Flask) -> None:
    order: list[str] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        order.append("teardown")

    @app.post("/login")
    def login() -> t.Any:
        session["user"] = "ada"
        return "", 204

    @app.get("/ctx")
    @sse_route()
    def ctx() -> t.Iterator[t.Any]:
        g.x = request.args["x"]
        yield {"x": g.x}
        time.sleep(0.05)
        order.append("generator")
        from flask import current_app

        yield {"x": g.x, "user": session.get("user"), "app": current_app.name}

    client = app.test_client()
    client.post("/login")
    order.clear()
    events = read_events(client.get("/ctx?x=1"))
    assert [e.data for e in events] == ['{"x":"1"}', '{"x":"1","user":"ada","app":"test_app"}']
    assert order == ["generator", "teardown"]


def test_wsgi_compliance(app: Flask) -> None:
    """wsgiref's validator rejects hop-by-hop headers, str chunks and bodies
    that are not closed."""

    @app.get("/s")
    @sse_route(retry=10, headers={"X-Stream": "yes"})
    def s() -> t.Iterator[str]:
        yield "a"

    response = Client(wsgiref.validate.validator(app)).get("/s")  # type: ignore[no-untyped-call]
    assert response.get_data() == b"retry: 10\ndata: a\n\n"
    assert response.headers["X-Stream"] == "yes"
    response.close()


def test_head_starts_no_stream(app: Flask, client: t.Any) -> None:
    closed = []

    @app.get("/h")
    @sse_route()
    def h() -> t.Iterator[str]:
        try:
            yield "a"
        finally:
            closed.append(True)

    response = client.head("/h")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.get_data() == b""
    assert live_streams() == 0


def test_closing_the_response_closes_the_generator(app: Flask, client: t.Any) -> None:
    cleaned = threading.Event()

    @app.get("/forever")
    @sse_route(heartbeat=0.05)
    def forever() -> t.Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            cleaned.set()

    response = client.get("/forever", buffered=False)
    events = []
    for event in iter_events(response):
        events.append(event)
        if len(events) == 3:
            break
    assert live_streams(app) == 1
    response.close()
    assert cleaned.wait(5)
    assert live_streams(app) == 0
    assert [e.data for e in events] == ["0", "1", "2"]


def test_heartbeat_under_threads(app: Flask, client: t.Any) -> None:
    @app.get("/quiet")
    @sse_route(heartbeat=0.05)
    def quiet() -> t.Iterator[str]:
        time.sleep(0.6)  # EVSTREAM_START_WAIT (0.1 s) passes first
        yield "late"

    body = client.get("/quiet").get_data()
    assert body.startswith(b":\n: ping\n: ping\n")
    assert body.endswith(b": ping\ndata: late\n\n")
    assert set(body.removesuffix(b"data: late\n\n").split(b"\n")) == {b":", b": ping", b""}


def test_slow_client_pauses_generator(app: Flask) -> None:
    """With EVSTREAM_MAX_BUFFER small, a generator is held back while the
    client does not read, instead of buffering without bound."""
    app.config["EVSTREAM_MAX_BUFFER"] = 100
    produced = []

    @app.get("/fast")
    @sse_route(heartbeat=None)
    def fast() -> t.Iterator[str]:
        for i in range(1000):
            produced.append(i)
            yield "x" * 50

    other = Flask("other")
    other.config["EVSTREAM_MAX_BUFFER"] = 100
    other.add_url_rule("/fast", view_func=fast)
    response = other.test_client().get("/fast", buffered=False)
    time.sleep(0.3)
    assert len(produced) < 10
    response.close()


def test_decoration_time_errors() -> None:
    with pytest.raises(ValueError, match="sse_route retry must be an integer .* got -1"):
        sse_route(retry=-1)
    with pytest.raises(ValueError, match="retry .* got '5'"):
        sse_route(retry="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ids must be a bool"):
        sse_route(ids=1)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="heartbeat must be a number of seconds from 0 to 86400 or None, got -1"
    ):
        sse_route(heartbeat=-1)
    with pytest.raises(ValueError, match="got nan"):
        sse_route(heartbeat=float("nan"))
    with pytest.raises(ValueError, match="got inf"):
        sse_route(heartbeat=float("inf"))
    with pytest.raises(ValueError, match="'Bad Name' is not a valid HTTP field name"):
        sse_route(headers={"Bad Name": "x"})
    with pytest.raises(ValueError, match="'X-Price' must hold visible ASCII"):
        sse_route(headers={"X-Price": "5 \u20ac"})
    with pytest.raises(ValueError, match="'X-Split' must hold visible ASCII"):
        sse_route(headers={"X-Split": "a\r\nSet-Cookie: x=1"})
    with pytest.raises(ValueError, match="must not set 'Content-Encoding'"):
        sse_route(headers={"Content-Encoding": "gzip"})
    with pytest.raises(TypeError, match="mapping or a list of \\(name, value\\) pairs"):
        sse_route(headers=["X-A"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must not set 'Transfer-Encoding'"):
        sse_route(headers={"Transfer-Encoding": "chunked"})
    with pytest.raises(ValueError, match="must not set 'Connection'"):
        sse_route(headers=[("Connection", "close")])

    async def coro() -> None:
        pass

    with pytest.raises(TypeError, match="needs a sync view"):
        sse_route()(coro)


def test_extension_shape() -> None:
    app = Flask("a")
    sse = EvStream()
    sse.init_app(app)
    assert app.config["EVSTREAM_HEARTBEAT"] == 15.0
    assert app.config["EVSTREAM_RETRY"] is None
    assert app.config["EVSTREAM_START_WAIT"] == 0.1
    assert app.config["EVSTREAM_MAX_BUFFER"] == 65536
    assert app.extensions["evstream"].extension is sse
    with pytest.raises(RuntimeError, match="already registered"):
        sse.init_app(app)
    # One extension object, two apps.
    second = Flask("b")
    second.config["EVSTREAM_HEARTBEAT"] = None
    sse.init_app(second)
    assert second.extensions["evstream"].settings.heartbeat is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "EVSTREAM_HEARTBEAT",
            "15",
            "EVSTREAM_HEARTBEAT must be a number of seconds from 0 to 86400 or None, got '15'",
        ),
        ("EVSTREAM_HEARTBEAT", -1, "got -1"),
        ("EVSTREAM_HEARTBEAT", float("nan"), "got nan"),
        ("EVSTREAM_HEARTBEAT", 1e10, "got 10000000000.0"),
        ("EVSTREAM_START_WAIT", float("inf"), "got inf"),
        (
            "EVSTREAM_RETRY",
            1.5,
            "EVSTREAM_RETRY must be an integer number of milliseconds >= 0 or None, got 1.5",
        ),
        (
            "EVSTREAM_START_WAIT",
            None,
            "EVSTREAM_START_WAIT must be a number of seconds from 0 to 86400, got None",
        ),
        (
            "EVSTREAM_MAX_BUFFER",
            0,
            "EVSTREAM_MAX_BUFFER must be an integer number of bytes >= 1, got 0",
        ),
    ],
)
def test_config_is_validated_at_init_app(key: str, value: t.Any, message: str) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(ValueError) as info:
        EvStream(app)
    assert message in str(info.value)


def test_read_events_rejects_other_content(app: Flask, client: t.Any) -> None:
    @app.get("/html")
    def html() -> str:
        return "<p>hi</p>"

    with pytest.raises(
        ValueError,
        match="Expected response header Content-Type to be text/event-stream, got 'text/html",
    ):
        read_events(client.get("/html"))


def test_long_last_event_id_numbers_from_one(app: Flask, client: t.Any) -> None:
    @app.get("/ids")
    @sse_route(ids=True)
    def ids() -> t.Iterator[str]:
        yield "a"

    assert client.get("/ids", headers={"Last-Event-ID": "9" * 18}).get_data() == (
        b"id: 1000000000000000000\ndata: a\n\n"
    )
    for last in ("9" * 19, "1" * 5000):
        response = client.get("/ids", headers={"Last-Event-ID": last})
        assert response.status_code == 200
        assert response.get_data() == b"id: 1\ndata: a\n\n"


def test_after_request_that_drops_the_body_closes_the_stream(app: Flask) -> None:
    closed = threading.Event()

    @app.get("/s")
    @sse_route()
    def s() -> t.Iterator[str]:
        try:
            while True:
                yield "x"
                time.sleep(0.01)
        finally:
            closed.set()

    @app.after_request
    def replace(response: Response) -> Response:
        if request.args.get("mode") == "replace":
            return Response("maintenance", status=503)
        if request.args.get("mode") == "raise":
            raise RuntimeError("after_request failed")
        return response

    client = app.test_client()
    response = client.get("/s?mode=replace")
    assert (response.status_code, response.get_data()) == (503, b"maintenance")
    assert closed.wait(5)
    assert live_streams(app) == 0
    closed.clear()
    app.testing = False  # let Flask answer 500 instead of raising
    app.logger.disabled = True  # the logger is global by name: restore it for later tests
    try:
        response = client.get("/s?mode=raise")
    finally:
        app.logger.disabled = False
    assert response.status_code == 500
    assert closed.wait(5)
    assert live_streams(app) == 0


def test_close_reaches_an_iterable_whose_iterator_is_another_object(
    app: Flask, client: t.Any
) -> None:
    calls: list[str] = []

    class Subscription:
        def __iter__(self) -> t.Iterator[str]:
            try:
                yield "a"
                yield "b"
            finally:
                calls.append("iterator")

        def close(self) -> None:
            calls.append("iterable")

    @app.get("/sub")
    @sse_route()
    def sub() -> Subscription:
        return Subscription()

    assert client.get("/sub").get_data() == b"data: a\n\ndata: b\n\n"
    assert calls == ["iterator", "iterable"]


def test_thread_close_does_not_wait_for_a_blocked_generator(app: Flask) -> None:
    """Under threads, closing a stream whose generator is blocked in a call
    returns at once (the server's thread is not held) and tears the request
    down; the generator's own thread closes it when the call returns, still
    seeing its context's objects. (Until 0.2 close waited up to 5 s for the
    generator, so teardown came last.)"""
    order: list[str] = []
    finished = threading.Event()
    release = threading.Event()

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        order.append("teardown")

    @app.get("/slow")
    @sse_route(heartbeat=None)
    def slow() -> t.Iterator[str]:
        g.x = "set"
        try:
            yield "a"
            release.wait(10)  # a blocked call: a thread cannot be interrupted
            order.append(f"generator sees g: {g.get('x', 'missing')}")
            yield "b"
        finally:
            order.append("finally")
            finished.set()

    client = app.test_client()
    response = client.get("/slow", buffered=False)
    assert next(iter_events(response)).data == "a"
    response.close()
    assert order == ["teardown"]  # close returned while the generator is blocked
    assert live_streams(app) == 0
    release.set()
    assert finished.wait(5)
    assert order == ["teardown", "generator sees g: set", "finally"]


def test_headers_merge_case_insensitively(app: Flask, client: t.Any) -> None:
    @app.get("/h")
    @sse_route(headers={"cache-control": "no-cache", "X-Extra": "1"})
    def h() -> t.Iterator[str]:
        yield "a"

    for response in (client.get("/h"), client.head("/h")):
        assert response.headers.getlist("Cache-Control") == ["no-cache"]
        assert response.headers["X-Extra"] == "1"
        assert "Content-Length" not in response.headers
        response.close()


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0", 0),
        ("42", 42),
        ("9" * 18, 10**18 - 1),
        ("9" * 19, None),
        ("", None),
        (None, None),
        ("²", None),  # str.isdigit() says yes
        ("٣", None),  # Arabic-Indic three: int() would take it
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1 ", None),
        ("1_000", None),  # int() would take it
        ("0x10", None),
        ("abc", None),
        ("1" * 5000, None),  # past int()'s digit limit: must not raise
    ],
)
def test_parse_event_id(value: str | None, number: int | None) -> None:
    from flask_evstream import parse_event_id

    assert parse_event_id(value) == number


def test_a_late_http_error_is_logged_at_info_without_a_traceback(
    app: Flask, client: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    from flask import abort

    @app.get("/late")
    @sse_route()
    def late() -> t.Iterator[t.Any]:
        yield "first"
        abort(403)

    @app.get("/broken")
    @sse_route()
    def broken() -> t.Iterator[t.Any]:
        yield "first"
        raise KeyError("boom")

    caplog.set_level(logging.INFO, logger=app.logger.name)
    assert [e.data for e in read_events(client.get("/late"))] == ["first"]
    late_records = [r for r in caplog.records if "late" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in late_records] == [(logging.INFO, None)]
    assert "403 Forbidden" in late_records[0].getMessage()
    caplog.clear()
    assert [e.data for e in read_events(client.get("/broken"))] == ["first"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
