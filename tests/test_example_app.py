"""The example app's OpenAI-compatible chat, its notifications and jobs
APIs: read by the official ``openai`` package and over raw HTTP, against the
app served by a real gunicorn (gevent worker) with the settings taken from
the environment; the request checks in process."""

from __future__ import annotations

import json
import typing as t

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from example_app import create_app
from example_app.models import OfflineModel

from .conftest import Server

APP = "example_app:create_app()"
MESSAGES: list[t.Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What are server-sent events?"},
]
# A short, fast answer for most tests.
FAST = {"DEMO_TOKENS_PER_SECOND": "400", "DEMO_ANSWER_WORDS": "40"}


def start_demo(start_server: t.Callable[..., Server], **env: str) -> Server:
    return start_server(APP, env={**FAST, **env}, ready_path="/healthz")


def client_for(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def streamed_text(client: openai.OpenAI, **kwargs: t.Any) -> tuple[str, list[t.Any]]:
    chunks = list(
        client.chat.completions.create(
            model="evstream-offline", messages=MESSAGES, stream=True, **kwargs
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


@pytest.mark.server
def test_openai_client_streamed_deltas_are_the_non_streamed_text(
    start_server: t.Callable[..., Server],
) -> None:
    server = start_demo(start_server)
    client = client_for(server)
    text, chunks = streamed_text(client)
    whole = client.chat.completions.create(model="evstream-offline", messages=MESSAGES)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "stop"
    assert text == whole.choices[0].message.content
    assert text == OfflineModel(tokens_per_second=1, words=40).complete(MESSAGES)
    # OpenAI's chunk shape: the role first, content deltas, a last chunk
    # with finish_reason, all with the same id, object, created and model.
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert {(c.id, c.object, c.created, c.model) for c in chunks} == {
        (chunks[0].id, "chat.completion.chunk", chunks[0].created, "evstream-offline")
    }
    assert chunks[0].id.startswith("chatcmpl-")
    assert len(chunks) == len(text.split()) + 2  # a token per word, plus first and last
    # usage on request, as OpenAI's stream_options does
    _, with_usage = streamed_text(client, stream_options={"include_usage": True})
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.completion_tokens == len(text.split())
    # max_tokens cuts the answer with finish_reason "length", both ways
    short, cut = streamed_text(client, max_tokens=5)
    assert short == "".join(OfflineModel(tokens_per_second=1, words=40).answer(MESSAGES)[:5])
    assert cut[-1].choices[0].finish_reason == "length"
    whole_short = client.chat.completions.create(
        model="evstream-offline", messages=MESSAGES, max_tokens=5
    )
    assert whole_short.choices[0].message.content == short
    assert whole_short.choices[0].finish_reason == "length"
    assert "Traceback" not in server.log()


@pytest.mark.server
def test_raw_stream_is_openais_format_and_resumable(start_server: t.Callable[..., Server]) -> None:
    server = start_demo(start_server)
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        with connect_sse(http, "POST", "/v1/chat/completions", json=body) as source:
            assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
            location = source.response.headers["content-location"]
            events = list(source.iter_sse())
        assert events[-1].data == "[DONE]"
        chunks = [json.loads(e.data) for e in events[:-1]]
        assert chunks[0]["choices"] == [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
        # The whole answer again from its log, by GET, any time after: the
        # same events with the same ids, without running the model again.
        with connect_sse(http, "GET", location) as source:
            again = list(source.iter_sse())
        assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in events]
        # From the middle, with Last-Event-ID: the rest.
        middle = events[10].id
        with connect_sse(http, "GET", location, headers={"Last-Event-ID": middle}) as source:
            rest = list(source.iter_sse())
        assert [e.data for e in rest] == [e.data for e in events[11:]]


@pytest.mark.server
def test_heartbeats_between_tokens_do_not_disturb_the_openai_client(
    start_server: t.Callable[..., Server],
) -> None:
    # A heartbeat every 20 ms (through the environment), tokens every 100 ms:
    # several heartbeats between two tokens.
    server = start_demo(
        start_server,
        FLASK_EVSTREAM_HEARTBEAT="0.02",
        DEMO_TOKENS_PER_SECOND="10",
        DEMO_ANSWER_WORDS="8",
    )
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    raw = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30).content
    tokens = OfflineModel(tokens_per_second=1, words=8).answer(MESSAGES)
    # Heartbeats did go out between the events.
    assert raw.count(b": ping\n") > len(tokens)
    text, chunks = streamed_text(client_for(server))
    assert text == "".join(tokens)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.server
def test_upstream_mode_streams_the_upstreams_tokens(start_server: t.Callable[..., Server]) -> None:
    upstream = start_demo(start_server, DEMO_SEED="7")
    proxy = start_demo(
        start_server,
        DEMO_UPSTREAM_BASE_URL=upstream.url + "/v1",
        DEMO_UPSTREAM_API_KEY="sk-test",
        DEMO_UPSTREAM_MODEL="evstream-offline",
    )
    theirs = client_for(upstream).chat.completions.create(model="x", messages=MESSAGES)
    upstream_text = theirs.choices[0].message.content
    ours = OfflineModel(tokens_per_second=1, words=40).complete(MESSAGES)
    assert upstream_text != ours  # seed 7 talks differently: the test can tell them apart
    text, chunks = streamed_text(client_for(proxy))
    assert text == upstream_text
    assert len(chunks) > 10  # token by token, not one block
    whole = client_for(proxy).chat.completions.create(model="x", messages=MESSAGES)
    assert whole.choices[0].message.content == upstream_text
    # An upstream that fails ends the stream with the recorded ending.
    upstream.stop()
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx.Client(base_url=proxy.url, timeout=20) as http:
        with connect_sse(http, "POST", "/v1/chat/completions", json=body) as source:
            events = list(source.iter_sse())
    assert [(e.event, e.data) for e in events[-1:]] == [("evstream-end", '{"reason":"failed"}')]


@pytest.mark.server
def test_bad_requests_get_openai_errors(start_server: t.Callable[..., Server]) -> None:
    server = start_demo(start_server)
    client = client_for(server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[])
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "'messages' must be a non-empty array, got an empty array.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=[{"role": "wizard", "content": "hi"}], stream=True
        )
    assert caught.value.body["param"] == "messages[0].role"  # type: ignore[index]
    response = httpx.post(server.url + "/v1/chat/completions", content=b"not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_request_checks_name_the_parameter() -> None:
    app = create_app()
    client = app.test_client()
    cases = [
        ({"messages": MESSAGES}, "model"),
        ({"model": "m", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": MESSAGES, "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ]
    for body, param in cases:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        assert response.json["error"]["param"] == param, body  # type: ignore[index]


def test_settings_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_EVSTREAM_HEARTBEAT", "5")
    monkeypatch.setenv("DEMO_JOB_STEPS", "7")
    app = create_app()
    assert app.config["EVSTREAM_HEARTBEAT"] == 5
    assert app.config["DEMO_JOB_STEPS"] == 7
    monkeypatch.setenv("DEMO_JOB_STEPS", "seven")
    with pytest.raises(ValueError, match="DEMO_JOB_STEPS must be an integer, got 'seven'"):
        create_app()
    monkeypatch.setenv("DEMO_JOB_STEPS", "7")
    monkeypatch.setenv("DEMO_TOKENS_PER_SECOND", "0")
    with pytest.raises(
        ValueError, match="DEMO_TOKENS_PER_SECOND must be a number above 0, got 0.0"
    ):
        create_app()


def test_notify_checks_its_input() -> None:
    client = create_app().test_client()
    assert client.post("/notify", json={"body": "x"}).json == {
        "error": "'title' must be a non-empty string."
    }
    assert client.post("/notify", json={"title": "t", "level": "loud"}).status_code == 400
    ok = client.post("/notify", json={"title": " Deployed ", "body": "v2"})
    assert ok.status_code == 201
    assert ok.json["title"] == "Deployed"  # type: ignore[index]
    assert client.post("/jobs", json={"name": 5}).status_code == 400
    assert client.get("/jobs/not-a-job/events").status_code == 404
