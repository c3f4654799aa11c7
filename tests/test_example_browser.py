"""The example app in headless Chromium, served by gunicorn (one worker with
the memory broker, and two workers sharing a real redis-server), through a
TCP proxy that can cut and refuse connections: the chat types, stops and
survives a reload; the notification badge updates in two pages at once and
a page catches up after a cut; jobs run side by side and a reload shows them
where they are. Screenshots of each page (desktop and mobile widths) go to
``test-artifacts/`` (``EVSTREAM_TEST_ARTIFACTS``), not committed."""

from __future__ import annotations

import os
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from playwright.sync_api import Browser, Page

from example_app.models import OfflineModel

from .conftest import ROOT, Server
from .proxy import CuttingProxy
from .redis_server import RedisServer

pytestmark = pytest.mark.server

APP = "example_app:create_app()"
TOKENS_PER_SECOND = 20
WORDS = 70
STEPS = 30
STEP_SECONDS = 0.2
ARTIFACTS = Path(os.environ.get("EVSTREAM_TEST_ARTIFACTS", ROOT / "test-artifacts"))


class Demo(t.NamedTuple):
    server: Server
    proxy: CuttingProxy
    mode: str

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(params=["memory-1-worker", "redis-2-workers"])
def demo(
    request: pytest.FixtureRequest,
    start_server: t.Callable[..., Server],
    tmp_path_factory: pytest.TempPathFactory,
) -> t.Iterator[Demo]:
    env = {
        "DEMO_TOKENS_PER_SECOND": str(TOKENS_PER_SECOND),
        "DEMO_ANSWER_WORDS": str(WORDS),
        "DEMO_JOB_STEPS": str(STEPS),
        "DEMO_JOB_STEP_SECONDS": str(STEP_SECONDS),
        # Settings of flask-evstream through the environment, as a user sets
        # them: browsers reconnect after 300 ms; a channel keeps 5 events.
        "FLASK_EVSTREAM_RETRY": "300",
        "FLASK_EVSTREAM_HISTORY": "5",
    }
    redis = None
    workers = 1
    if request.param == "redis-2-workers":
        redis = RedisServer(tmp_path_factory.mktemp("redis"))
        env["FLASK_EVSTREAM_BROKER_URL"] = redis.url
        workers = 2
    server = start_server(APP, env=env, workers=workers, ready_path="/healthz")
    proxy = CuttingProxy([("127.0.0.1", server.port)])
    try:
        yield Demo(server, proxy, request.param)
    finally:
        proxy.close()
        server.stop()
        if redis is not None:
            redis.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]


def shoot(page: Page, name: str, demo: Demo) -> None:
    """A screenshot at the page's width and at a phone's."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-{demo.mode}-desktop.png"))
    size = page.viewport_size
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / f"{name}-{demo.mode}-mobile.png"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    if size:
        page.set_viewport_size(size)


def new_page(browser: Browser, demo: Demo, path: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo.url + path)
    page.errors = errors  # type: ignore[attr-defined]
    return page


ANSWER = "(document.querySelector('.msg.assistant.streaming .text')?.textContent ?? null)"
LAST = "[...document.querySelectorAll('.msg.assistant')].at(-1)?.querySelector('.text').textContent"


def expected_answer(prompt: str) -> str:
    model = OfflineModel(tokens_per_second=TOKENS_PER_SECOND, words=WORDS)
    return model.complete([{"role": "user", "content": prompt}])


def ask(page: Page, prompt: str) -> None:
    page.wait_for_function("window.chatReady === true", timeout=10_000)
    page.fill("#prompt", prompt)
    page.click("#send")


def test_chat_types_survives_a_reload_and_stops(browser: Browser, demo: Demo) -> None:
    page = new_page(browser, demo, "/")
    posts: list[str] = []
    locations: list[str] = []

    def seen(response: t.Any) -> None:
        if response.request.method == "POST" and "/v1/chat/completions" in response.url:
            posts.append(response.url)
            locations.append(response.headers.get("content-location", ""))

    page.on("response", seen)
    prompt = "How do resumable streams work?"
    ask(page, prompt)
    # The answer grows over time: several distinct lengths before it ends.
    lengths: set[int] = set()
    deadline = time.monotonic() + 20
    while len(lengths) < 4 and time.monotonic() < deadline:
        text = page.evaluate(ANSWER)
        if text:
            lengths.add(len(text))
        page.wait_for_timeout(50)
    assert len(lengths) >= 4, lengths
    page.wait_for_function(f"({ANSWER} || '').length > 80", timeout=20_000)
    shoot(page, "chat", demo)
    before = page.evaluate(ANSWER)
    assert page.evaluate("window.lastEnd") is None  # still typing: reload now
    page.reload()
    page.wait_for_function("window.lastEnd === 'done'", timeout=30_000)
    full = page.evaluate(LAST)
    # Continued where it was: no duplicate, nothing missing, and the POST
    # (the model) ran once.
    assert full.startswith(before)
    assert full == expected_answer(prompt)
    assert len(posts) == 1
    assert page.evaluate("document.querySelectorAll('.msg').length") == 2
    assert page.evaluate("document.querySelector('#conn').dataset.state") == "idle"

    # Stop: the server-side generator stops, and the log says cancelled.
    ask(page, "And how do I stop one?")
    page.wait_for_function(f"({ANSWER} || '').length > 20", timeout=20_000)
    page.click("#stop")
    page.wait_for_function("window.lastEnd === 'stopped'", timeout=10_000)
    assert len(posts) == 2
    stopped_text = page.evaluate(LAST)
    location = locations[-1]
    assert location.startswith("/evstream/streams/")
    with httpx.Client(base_url=demo.server.url, timeout=10) as http:
        deadline = time.monotonic() + 10
        while True:
            with connect_sse(http, "GET", location) as source:
                events = list(source.iter_sse())
            if events and events[-1].event == "evstream-end" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert (events[-1].event, events[-1].data) == ("evstream-end", '{"reason":"cancelled"}')
    tokens = [e for e in events if e.event == "message" and '"content":"' in e.data]
    full_tokens = OfflineModel(tokens_per_second=1, words=WORDS).answer(
        [{"role": "user", "content": "And how do I stop one?"}]
    )
    assert len(tokens) < len(full_tokens) - 5  # it stopped well before the end
    assert len(page.evaluate(LAST)) == len(stopped_text)  # nothing typed after Stop
    assert page.evaluate("document.querySelector('.msg.assistant:last-child').dataset.status") == (
        "stopped"
    )
    assert page.errors == []  # type: ignore[attr-defined]


BADGE = "document.getElementById('badge')"


def badge(page: Page) -> str:
    return t.cast(str, page.evaluate(f"{BADGE}.hidden ? '0' : {BADGE}.textContent"))


def publish(demo: Demo, title: str) -> str:
    response = httpx.post(demo.server.url + "/notify", json={"title": title, "body": "b"})
    assert response.status_code == 201
    return t.cast(str, response.json()["id"])


def titles(page: Page) -> list[str]:
    return t.cast(
        list[str],
        page.evaluate(
            "[...document.querySelectorAll('#list .note strong')].map(e => e.textContent)"
        ),
    )


def test_notifications_reach_every_page_and_catch_up_after_a_cut(
    browser: Browser, demo: Demo
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pages = [context.new_page(), context.new_page()]
    pages[0].goto(demo.url + "/notifications")
    pages[1].goto(demo.url + "/jobs")
    for page in pages:
        page.wait_for_function("document.getElementById('feed-state').dataset.state === 'live'")
        assert badge(page) == "0"
    publish(demo, "Deploy finished <b>not bold</b>")
    for page in pages:  # both badges, at once
        page.wait_for_function(f"{BADGE}.textContent === '1' && !{BADGE}.hidden", timeout=10_000)
    assert titles(pages[0]) == ["Deploy finished <b>not bold</b>"]  # text, never HTML
    shoot(pages[0], "notifications", demo)

    # The network goes away; a notification is published meanwhile; it
    # arrives once the pages reconnect (Last-Event-ID, from the history).
    demo.proxy.refusing = True
    assert demo.proxy.cut() >= 2
    for page in pages:
        page.wait_for_function(
            "document.getElementById('feed-state').dataset.state === 'reconnecting'"
        )
    publish(demo, "While you were away")
    time.sleep(0.5)
    assert titles(pages[0]) == ["Deploy finished <b>not bold</b>"]
    demo.proxy.refusing = False
    for page in pages:
        page.wait_for_function(f"{BADGE}.textContent === '2'", timeout=15_000)
    assert titles(pages[0]) == ["While you were away", "Deploy finished <b>not bold</b>"]
    assert pages[0].evaluate("document.getElementById('gap').hidden") is True

    # Away for longer than the history (5 events): the stream says so with
    # a gap event and the page reloads the list from what is kept.
    demo.proxy.refusing = True
    demo.proxy.cut()
    pages[0].wait_for_function(
        "document.getElementById('feed-state').dataset.state === 'reconnecting'"
    )
    for i in range(7):
        publish(demo, f"Missed {i}")
    demo.proxy.refusing = False
    pages[0].wait_for_function("document.getElementById('gap').hidden === false", timeout=15_000)
    pages[0].wait_for_function(
        "document.querySelectorAll('#list .note').length === 5", timeout=10_000
    )
    assert titles(pages[0]) == [f"Missed {i}" for i in range(6, 1, -1)]
    # Mark all as read: the other page's badge follows.
    pages[0].click("#mark-read")
    for page in pages:
        page.wait_for_function(f"{BADGE}.hidden", timeout=10_000)
    context.close()


def jobs(page: Page) -> list[dict[str, t.Any]]:
    return t.cast(
        list[dict[str, t.Any]],
        page.evaluate(
            "[...document.querySelectorAll('#jobs .job')].map(li => ({id: li.dataset.id,"
            " state: li.dataset.state, percent: Number(li.dataset.percent || 0),"
            " step: Number(li.dataset.step || 0)}))"
        ),
    )


def test_jobs_run_side_by_side_and_a_reload_shows_them_in_progress(
    browser: Browser, demo: Demo
) -> None:
    page = new_page(browser, demo, "/jobs")
    page.fill("#job-form input", "Nightly export")
    page.click("#job-form button")
    page.wait_for_function("document.querySelectorAll('#jobs .job').length === 1")
    page.click("#job-form button")
    page.wait_for_function("document.querySelectorAll('#jobs .job').length === 2")
    page.wait_for_function(
        "[...document.querySelectorAll('#jobs .job')].every(li => Number(li.dataset.step) >= 3)",
        timeout=15_000,
    )
    shoot(page, "jobs", demo)
    before = {job["id"]: job["step"] for job in jobs(page)}
    assert all(job["state"] == "running" for job in jobs(page))
    page.reload()
    page.wait_for_function("document.querySelectorAll('#jobs .job').length === 2")
    page.wait_for_function(
        "[...document.querySelectorAll('#jobs .job')].every(li => Number(li.dataset.step) > 0)",
        timeout=10_000,
    )
    after = {job["id"]: job for job in jobs(page)}
    assert set(after) == set(before)
    for job_id, step in before.items():
        # Where it was or further, still running: not restarted.
        assert after[job_id]["step"] >= step
        assert after[job_id]["state"] == "running"
        assert after[job_id]["step"] < STEPS
    page.wait_for_function(
        "[...document.querySelectorAll('#jobs .job')].every(li => li.dataset.state === 'done')",
        timeout=30_000,
    )
    assert [job["percent"] for job in jobs(page)] == [100, 100]
    assert page.evaluate("document.querySelector('.job .job-name').textContent") in (
        "Nightly export",
        "Report 2",
    )
    assert page.errors == []  # type: ignore[attr-defined]
