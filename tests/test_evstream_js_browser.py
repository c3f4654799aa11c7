"""evstream.js in headless Chromium against two gunicorn servers (gevent,
two workers each) sharing a real redis-server, through a TCP proxy that cuts
connections: the answer shown is exactly the answer generated and the POST
ran once, whatever the cuts; a page reload resumes it; stop() stops the
generator; a second page follows the same answer; the parser in the
browser reads what our encoder writes."""

from __future__ import annotations

import time
import typing as t

import pytest
from playwright.sync_api import Page

from .conftest import Server
from .proxy import CuttingProxy
from .redis_server import RedisServer

pytestmark = pytest.mark.server

APP = "tests.apps.resumable:app"


@pytest.fixture
def proxy(
    start_server: t.Callable[..., Server], redis_server: RedisServer
) -> t.Iterator[CuttingProxy]:
    redis_server.admin.flushall()
    env = {"EVSTREAM_BROKER_URL": redis_server.url, "TEST_REDIS_URL": redis_server.url}
    servers = [start_server(APP, env=env, workers=2) for _ in range(2)]
    backends = [("127.0.0.1", int(s.url.rsplit(":", 1)[1])) for s in servers]
    proxy = CuttingProxy(backends)
    yield proxy
    proxy.close()
    for server in servers:
        assert "Traceback" not in server.log(), server.log()[-3000:]


def open_page(browser: t.Any, proxy: CuttingProxy) -> Page:
    page = browser.new_page()
    page.goto(proxy.url + "/page")
    page.wait_for_function("window.ready === true", timeout=10_000)
    return page


START = """([body, key]) => {
  const saved = () => JSON.parse(sessionStorage.getItem("text") || "[]");
  window.reason = null;
  window.handle = window.evs.stream("/chat", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
    resumeKey: key,
    onEvent: (e) => sessionStorage.setItem("text", JSON.stringify([...saved(), e.data])),
    onEnd: (reason) => { window.reason = reason; },
  });
}"""

COUNT = "JSON.parse(sessionStorage.getItem('text') || '[]').length"
TEXT = "JSON.parse(sessionStorage.getItem('text') || '[]')"


def wait_count(page: Page, n: int) -> None:
    page.wait_for_function(f"{COUNT} >= {n}", timeout=20_000)


def test_cuts_mid_answer_lose_nothing_and_never_resend_the_post(
    browser: t.Any, proxy: CuttingProxy, redis_server: RedisServer
) -> None:
    page = open_page(browser, proxy)
    page.evaluate(START, [{"prompt": "w", "n": 60, "delay": 0.03}, "cuts"])
    for count in (5, 20, 35):
        wait_count(page, count)
        assert proxy.cut() >= 1
    page.wait_for_function("window.reason !== null", timeout=30_000)
    assert page.evaluate("window.reason") == "done"
    assert page.evaluate(TEXT) == [f"w {i}" for i in range(60)]
    assert redis_server.admin.get("test:posts") == "1"
    assert proxy.connections >= 4  # the first request and at least three resumes
    # The resume key is forgotten once the answer has ended.
    assert page.evaluate("sessionStorage.getItem('evstream:cuts')") is None


def test_a_reload_mid_answer_resumes_it(
    browser: t.Any, proxy: CuttingProxy, redis_server: RedisServer
) -> None:
    page = open_page(browser, proxy)
    page.evaluate(START, [{"prompt": "r", "n": 50, "delay": 0.03}, "reload"])
    wait_count(page, 8)
    page.reload()
    page.wait_for_function("window.ready === true", timeout=10_000)
    page.evaluate(
        """() => {
      const saved = () => JSON.parse(sessionStorage.getItem("text") || "[]");
      window.reason = null;
      window.handle = window.evs.resume("reload", {
        onEvent: (e) => sessionStorage.setItem("text", JSON.stringify([...saved(), e.data])),
        onEnd: (reason) => { window.reason = reason; },
      });
      if (window.handle === null) window.reason = "nothing to resume";
    }"""
    )
    page.wait_for_function("window.reason !== null", timeout=30_000)
    assert page.evaluate("window.reason") == "done"
    assert page.evaluate(TEXT) == [f"r {i}" for i in range(50)]
    assert redis_server.admin.get("test:posts") == "1"


def test_stop_stops_the_generator_and_a_second_page_follows_the_answer(
    browser: t.Any, proxy: CuttingProxy, redis_server: RedisServer
) -> None:
    page = open_page(browser, proxy)
    page.evaluate(START, [{"prompt": "s", "n": 100000, "delay": 0.05}, "stop"])
    wait_count(page, 3)
    location = page.evaluate("new URL(window.handle.resumeUrl).pathname")
    sid = location.rsplit("/", 1)[1]
    # A second page follows the same answer from its start.
    other = open_page(browser, proxy)
    other.evaluate(
        """(url) => {
      window.seen = [];
      window.evs.stream(url, {onEvent: (e) => window.seen.push(e.data),
                              onEnd: (r) => { window.ended = r; }});
    }""",
        location,
    )
    other.wait_for_function("window.seen.length >= 5", timeout=20_000)
    assert page.evaluate("window.handle.stop()") == "stopped"
    deadline = time.monotonic() + 10
    while redis_server.admin.llen("test:finally") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_server.admin.lrange("test:finally", 0, -1)[0].startswith(sid)
    tokens = redis_server.admin.get(f"test:tokens:{sid}")
    time.sleep(0.5)
    assert redis_server.admin.get(f"test:tokens:{sid}") == tokens  # no further token
    other.wait_for_function("window.ended !== undefined", timeout=20_000)
    assert other.evaluate("window.ended") == "cancelled"
    seen = other.evaluate("window.seen")
    assert seen == [f"s {i}" for i in range(len(seen))]
    assert len(seen) <= int(tokens or 0)


def test_evstream_js_is_served_with_its_version(browser: t.Any, proxy: CuttingProxy) -> None:
    page = open_page(browser, proxy)
    from flask_evstream import __version__

    assert page.evaluate("window.evs.VERSION") == __version__.removesuffix(".dev0")
    response = page.request.get(proxy.url + "/evstream/evstream.js")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-evstream-version"] == __version__


def test_the_parser_in_chromium_reads_the_same_vectors(browser: t.Any, proxy: CuttingProxy) -> None:
    """The parser as Chromium runs it (its TextDecoder), on the WHATWG
    probes and on random events encoded by us and cut anywhere: the same
    answers as in node."""
    import base64

    from .test_event_parsers import PROBES
    from .test_evstream_js import random_cases

    page = open_page(browser, proxy)
    page.evaluate(
        """async () => {
      const { Parser } = await import("/evstream/evstream.js");
      window.parse = (cases) => cases.map((chunks) => {
        const events = [];
        const parser = new Parser((e) => events.push([e.type, e.data, e.lastEventId]));
        for (const c of chunks) parser.feed(Uint8Array.from(atob(c), (ch) => ch.charCodeAt(0)));
        parser.end();
        return events;
      });
    }"""
    )

    def run(cases: list[list[bytes]]) -> t.Any:
        encoded = [[base64.b64encode(c).decode() for c in chunks] for chunks in cases]
        return page.evaluate("(cases) => window.parse(cases)", encoded)

    names = list(PROBES)
    for name, events in zip(names, run([PROBES[n][0] for n in names])):
        assert [(e[0], e[1]) for e in events] == PROBES[name][1], name
    cases, expected = random_cases(100)
    assert run(cases) == expected
