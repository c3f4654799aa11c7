"""CORS (flask-cors) and authentication recipes in headless Chromium: the
page on one origin, the streams on another (both real gunicorn servers with
gevent workers, on 127.0.0.1 with two ports: two origins of one site, as
app.example.com and api.example.com are). ``EventSource`` with
``withCredentials`` sends the session cookie and the exact origin is echoed
with credentials allowed; ``evstream.js`` POSTs with a preflight, reads the
exposed ``Content-Location``, resumes after a reload and stops across
origins; a short-lived signed token in the query string ends its stream when
it expires, the page reconnects with a new one and misses nothing, and the
token stays out of the access log."""

from __future__ import annotations

import typing as t

import httpx
import pytest
from httpx_sse import connect_sse
from playwright.sync_api import Browser, Page

from .conftest import Server

pytestmark = pytest.mark.server

APP = "tests.apps.cors_auth:app"


class Origins(t.NamedTuple):
    page: Server
    api: Server


@pytest.fixture
def origins(start_server: t.Callable[..., Server]) -> Origins:
    page = start_server(APP)
    api = start_server(
        APP,
        env={
            "TEST_PAGE_ORIGIN": page.url,
            "TEST_TOKEN_MAX_AGE": "2",
            "GUNICORN_CMD_ARGS": "--access-logfile -",
        },
    )
    return Origins(page, api)


def open_page(browser: Browser, origins: Origins) -> Page:
    page = browser.new_page()
    page.goto(f"{origins.page.url}/page?api={origins.api.url}")
    page.wait_for_function("window.ready === true", timeout=10_000)
    return page


LOGIN = """async () => (await fetch(api + "/login", {
  method: "POST", credentials: "include",
  headers: {"Content-Type": "application/json"}, body: JSON.stringify({user: "ada"}),
})).status"""

HELLO = """(withCredentials) => new Promise((resolve) => {
  const es = new EventSource(api + "/me/events", {withCredentials});
  es.addEventListener("hello", (e) => { es.close(); resolve(JSON.parse(e.data)); });
  es.onerror = () => { es.close(); resolve("error"); };
})"""


def test_eventsource_with_credentials_sends_the_cookie(browser: Browser, origins: Origins) -> None:
    page = open_page(browser, origins)
    assert page.evaluate(HELLO, True) == "error"  # not logged in: 401
    assert page.evaluate(LOGIN) == 200  # a preflighted POST that sets the cookie
    assert page.evaluate(HELLO, True) == {"user": "ada"}
    assert page.evaluate(HELLO, False) == "error"  # without credentials, no cookie

    # The headers behind it: the exact origin, credentials allowed; another
    # origin gets no CORS headers at all.
    with httpx.Client(base_url=origins.api.url, timeout=10) as http:
        http.post("/login", json={"user": "ada"})
        with http.stream("GET", "/me/events", headers={"Origin": origins.page.url}) as r:
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == origins.page.url
            assert r.headers["access-control-allow-credentials"] == "true"
        with http.stream("GET", "/me/events", headers={"Origin": "http://evil.test"}) as r:
            assert "access-control-allow-origin" not in r.headers
        preflight = http.options(
            "/chat",
            headers={
                "Origin": origins.page.url,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origins.page.url
        assert "POST" in preflight.headers["access-control-allow-methods"]


START = """([key, n]) => {
  const saved = () => JSON.parse(sessionStorage.getItem("got") || "[]");
  const handlers = {
    credentials: "include",
    resumeKey: key,
    onEvent: (e) => sessionStorage.setItem("got", JSON.stringify([...saved(), e.data])),
    onEnd: (reason) => { window.reason = reason; },
  };
  window.handlers = handlers;
  window.handle = window.evs.stream(api + "/chat", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({n}),
    ...handlers,
  });
}"""
RESUME = """(key) => {
  const saved = () => JSON.parse(sessionStorage.getItem("got") || "[]");
  window.handle = window.evs.resume(key, {
    credentials: "include",
    onEvent: (e) => sessionStorage.setItem("got", JSON.stringify([...saved(), e.data])),
    onEnd: (reason) => { window.reason = reason; },
  });
  return window.handle !== null;
}"""
GOT = "JSON.parse(sessionStorage.getItem('got') || '[]')"


def test_evstream_js_posts_resumes_and_stops_across_origins(
    browser: Browser, origins: Origins
) -> None:
    page = open_page(browser, origins)
    # Without credentials the POST carries no cookie: refused before streaming.
    page.evaluate(
        """() => { window.evs.stream(api + "/chat", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: "{}",
        onEnd: (r) => { window.first = r; }}); }"""
    )
    page.wait_for_function("window.first === 'http-401'", timeout=10_000)
    assert page.evaluate(LOGIN) == 200
    page.evaluate(START, ["chat", 60])
    page.wait_for_function(f"{GOT}.length >= 5", timeout=10_000)
    # Content-Location is exposed to the page's origin: evstream.js has it.
    resume_url = page.evaluate("window.handle.resumeUrl")
    assert resume_url.startswith(origins.api.url + "/evstream/streams/")
    page.reload()
    page.wait_for_function("window.ready === true", timeout=10_000)
    # Resumes by GET with Last-Event-ID (a preflighted request) on the API.
    assert page.evaluate(RESUME, "chat") is True
    page.wait_for_function(f"{GOT}.length >= 12", timeout=10_000)
    page.evaluate("window.handle.stop()")
    page.wait_for_function("window.reason === 'stopped'", timeout=10_000)
    got = page.evaluate(GOT)
    assert got == [f"token {i}" for i in range(len(got))]  # no duplicate, no gap
    # The DELETE crossed origins too (with the cookie the authorize hook
    # wants): the log says cancelled.
    with httpx.Client(timeout=10) as http:
        http.post(origins.api.url + "/login", json={"user": "ada"})
        for _ in range(100):
            with connect_sse(http, "GET", resume_url) as source:
                events = list(source.iter_sse())
            if events and events[-1].event == "evstream-end":
                break
            page.wait_for_timeout(100)
    assert (events[-1].event, events[-1].data) == ("evstream-end", '{"reason":"cancelled"}')
    assert len(events) - 1 < 60


FEED = """() => {
  window.got = [];
  window.reauths = 0;
  const connect = async (last) => {
    const {token} = await (await fetch("/token")).json();  // the page's own origin
    window.tokens = [...(window.tokens || []), token];
    const query = "?token=" + encodeURIComponent(token) + "&lastEventId=" + last;
    const es = new EventSource(api + "/feed" + query);
    es.onmessage = (e) => { window.got.push([e.lastEventId, JSON.parse(e.data).n]); };
    es.addEventListener("reauth", () => {
      es.close();
      window.reauths++;
      const seen = window.got.length ? window.got[window.got.length - 1][0] : last;
      connect(seen);
    });
  };
  connect("0");
}"""


def test_signed_token_stream_ends_at_expiry_and_the_page_reconnects(
    browser: Browser, origins: Origins
) -> None:
    page = open_page(browser, origins)
    page.evaluate(FEED)
    published = []
    for n in range(10):
        published.append(httpx.post(origins.api.url + "/publish", json={"n": n}).json()["id"])
        page.wait_for_function(f"window.got.length === {n + 1}", timeout=10_000)  # lockstep
        page.wait_for_timeout(400)  # spread them over more than one token's life
    page.wait_for_function("window.reauths >= 1", timeout=10_000)
    got = page.evaluate("window.got")
    assert [n for _, n in got] == list(range(10))  # nothing missed, nothing twice
    assert [event_id for event_id, _ in got] == published
    # Bad and expired tokens: refused before the stream starts.
    assert httpx.get(origins.api.url + "/feed?token=forged").status_code == 403
    old = page.evaluate("window.tokens[0]")
    assert httpx.get(origins.api.url + "/feed", params={"token": old}).status_code == 401
    # The tokens never reach the access log (gunicorn_conf logs the path only).
    log = origins.api.log()
    assert "GET /feed HTTP/1.1" in log
    for token in page.evaluate("window.tokens"):
        assert token not in log
