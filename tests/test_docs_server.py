"""The docs' samples that need a real server or a browser: the shell commands
run as the pages write them (in ``docs/examples/``, on a free loopback port
given through the environment the pages name), the curl transcripts
compared with what curl prints, and the pages of the recipes and of
security.rst driven in headless Chromium against gunicorn's gevent worker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from playwright.sync_api import Browser, Page

from docs.examples.resumable_chat import ANSWER

from .conftest import ROOT, Server, free_port
from .docs_samples import DOCS, sample
from .processes import end
from .proxy import CuttingProxy
from .redis_server import RedisServer

pytestmark = pytest.mark.server

EXAMPLES = DOCS / "examples"
VENV_BIN = str(Path(sys.executable).parent)


class Command:
    """A shell sample of the docs, run by bash as written: by default in
    docs/examples, with this checkout importable and the test venv's
    commands first on ``PATH``. ``cwd`` and ``bin_dir`` run it elsewhere
    (another venv's ``gunicorn``); ``checkout=False`` leaves this checkout
    off ``PYTHONPATH``, so the package comes from that venv."""

    def __init__(
        self,
        text: str,
        *,
        env: dict[str, str],
        tmp: Path,
        ready: str,
        cwd: Path = EXAMPLES,
        bin_dir: str = VENV_BIN,
        checkout: bool = True,
    ) -> None:
        self.log_path = tmp / f"command-{free_port()}.log"
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        if checkout:
            full_env["PYTHONPATH"] = str(ROOT)
        else:
            full_env.pop("PYTHONPATH", None)
            full_env.pop("VIRTUAL_ENV", None)
        full_env.update(env)
        self.proc = subprocess.Popen(
            ["bash", "-c", text],
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended below
        )
        try:
            self._wait(ready)
        except BaseException:
            self.stop()
            raise

    def _wait(self, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                with httpx.stream("GET", url, timeout=2) as response:
                    if response.status_code == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"no answer at {url}:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_count(self, text: str, wanted: int, within: float = 30.0) -> int:
        """How often ``text`` is in the log, once it is there ``wanted``
        times or ``within`` seconds have passed (a server is ready when its
        first worker answers; the others may still be booting)."""
        deadline = time.monotonic() + within
        while (found := self.log().count(text)) < wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def stop(self) -> None:
        end(self.proc, 30, group=True)  # bash and what it started
        self._log.close()


@pytest.fixture
def run_command(tmp_path: Path) -> t.Iterator[t.Callable[..., Command]]:
    commands: list[Command] = []

    def run(text: str, *, env: dict[str, str], ready: str) -> Command:
        command = Command(text, env=env, tmp=tmp_path, ready=ready)
        commands.append(command)
        return command

    yield run
    for command in commands:
        command.stop()
        assert "Traceback" not in command.log(), command.log()[-3000:]


def normalized(text: str) -> list[str]:
    """Lines with every number as N (times differ from run to run)."""
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in text.splitlines()]


def check_curl_transcript(key: str, host: str, port: int) -> None:
    """Run the ``$ curl ...`` line of a console sample against the server and
    compare what curl prints with the sample's lines."""
    lines = sample(key).splitlines()
    assert lines[0].startswith("$ curl -N ")
    words = shlex.split(lines[0][2:])
    words = [w.replace(host, f"127.0.0.1:{port}") for w in words]
    assert any(f"127.0.0.1:{port}" in w for w in words), words
    # Long enough for the events shown (one a second), then curl stops.
    done = subprocess.run(
        [*words, "-s", "--max-time", str(len(lines))], capture_output=True, text=True
    )
    assert done.returncode == 28, done  # stopped by --max-time: a stream
    expected = normalized("\n".join(lines[1:]))
    assert normalized(done.stdout)[: len(expected)] == expected, done.stdout


def test_quickstart_under_gunicorn(run_command: t.Callable[..., Command]) -> None:
    port = free_port()
    command = run_command(
        sample("sh-gunicorn"),
        env={"EVSTREAM_BIND": f"127.0.0.1:{port}", "EVSTREAM_WORKERS": "1"},
        ready=f"http://127.0.0.1:{port}/clock",
    )
    check_curl_transcript("console-curl-gunicorn", "localhost:8000", port)
    assert "Booting worker" in command.log() and "gevent" in command.log()


def test_quickstart_under_flask_run(run_command: t.Callable[..., Command]) -> None:
    port = free_port()
    run_command(
        sample("sh-flask-run"),
        env={"FLASK_RUN_PORT": str(port)},
        ready=f"http://127.0.0.1:{port}/clock",
    )
    check_curl_transcript("console-curl", "localhost:5000", port)


def test_quickstart_page_in_chromium(
    run_command: t.Callable[..., Command], browser: Browser
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_command(
        sample("sh-gunicorn"),
        env={"EVSTREAM_BIND": f"127.0.0.1:{port}", "EVSTREAM_WORKERS": "1"},
        ready=url + "/clock",
    )
    page = browser.new_page()
    # A page of that origin holding the sample (the app itself has none).
    html = f"<!doctype html><body>waiting</body><script>{sample('js-quickstart')}</script>"
    page.route(url + "/", lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(url + "/")
    page.wait_for_function("document.body.textContent.includes('GMT')", timeout=10_000)
    shown = page.evaluate("Date.parse(document.body.textContent)")
    assert abs(shown / 1000 - time.time()) < 60  # the server's clock, as a date


def watch_once(server_url: str) -> None:
    with httpx.Client(timeout=10) as http:
        with connect_sse(http, "GET", server_url + "/watch") as source:
            assert next(source.iter_sse()).data == '{"watching":true}'
        # The client is gone; the generator is blocked in time.sleep(3600).


def wait_stats(url: str, check: t.Callable[[dict[str, t.Any]], bool]) -> dict[str, t.Any]:
    deadline = time.monotonic() + 15
    stats = httpx.get(url + "/stats").json()
    while not check(stats) and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = httpx.get(url + "/stats").json()
    return stats  # type: ignore[no-any-return]


def test_cleanup_under_gevent_runs_the_finally(start_server: t.Callable[..., Server]) -> None:
    server = start_server("docs.examples.cleanup:app")
    watch_once(server.url)
    stats = wait_stats(server.url, lambda s: s["cleaned_up"] == 1)
    assert stats == {"live": 0, "started": 1, "cleaned_up": 1}


def test_cleanup_under_gthread_waits_for_the_call(run_command: t.Callable[..., Command]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = run_command(
        sample("sh-gthread"),
        env={"EVSTREAM_BIND": f"127.0.0.1:{port}", "EVSTREAM_WORKERS": "1"},
        ready=url + "/stats",
    )
    assert "gthread" in command.log()
    watch_once(url)
    stats = wait_stats(url, lambda s: s["live"] == 0)
    # The stream is closed and the server's thread free, but a thread cannot
    # be interrupted: the finally waits for time.sleep(3600) to return.
    assert stats == {"live": 0, "started": 1, "cleaned_up": 0}
    assert httpx.get(url + "/stats").status_code == 200


def read_first_events(urls: list[str], publish: t.Callable[[], None]) -> list[str]:
    """Open a stream at each URL, then publish, then read one event of each."""
    with contextlib.ExitStack() as stack:
        http = stack.enter_context(httpx.Client(timeout=15))
        sources = [stack.enter_context(connect_sse(http, "GET", u)) for u in urls]
        for source in sources:
            assert source.response.status_code == 200
        publish()
        return [next(source.iter_sse()).data for source in sources]


def news_command(
    run_command: t.Callable[..., Command], key: str, redis_url: str
) -> tuple[Command, str]:
    text = sample(key)
    assert "localhost:6379" in text
    port = free_port()
    text = text.replace("localhost:6379", redis_url.split("//", 1)[1].split("/")[0])
    url = f"http://127.0.0.1:{port}"
    command = run_command(
        text, env={"EVSTREAM_BIND": f"127.0.0.1:{port}"}, ready=url + "/news/stream"
    )
    return command, url


def test_news_on_four_workers_with_redis(
    run_command: t.Callable[..., Command], redis_server: RedisServer
) -> None:
    redis_server.admin.flushall()
    command, url = news_command(run_command, "sh-redis-workers", redis_server.url)
    assert command.log_count("Booting worker", 4) == 4, command.log()
    got = read_first_events(
        [url + "/news/stream"] * 12,
        lambda: httpx.post(url + "/news", data={"title": "to every worker"}).raise_for_status(),
    )
    assert got == ['{"title":"to every worker"}'] * 12
    assert "memory://" not in command.log()


def test_news_with_the_acl_user(
    run_command: t.Callable[..., Command], redis_server: RedisServer
) -> None:
    from .test_docs_redis import create_user, refusals

    redis_server.admin.flushall()
    user = create_user(redis_server.admin)
    try:
        command, url = news_command(run_command, "sh-redis-env", redis_server.url)
        got = read_first_events(
            [url + "/news/stream"] * 4,
            lambda: httpx.post(url + "/news", data={"title": "via ACL"}).raise_for_status(),
        )
        assert got == ['{"title":"via ACL"}'] * 4
        assert {c["user"] for c in redis_server.clients("evstream")} == {user}
        assert refusals(redis_server.admin) == []
    finally:
        redis_server.admin.execute_command("ACL", "DELUSER", user)


# -- the recipes in Chromium ----------------------------------------------------

WORDS = [w + " " for w in ANSWER.split(" ")]


def answer(page: Page) -> str:
    return t.cast(str, page.evaluate("document.querySelector('#answer').textContent"))


def test_chat_page_types_survives_a_reload_and_stops(
    start_server: t.Callable[..., Server], browser: Browser
) -> None:
    server = start_server("docs.examples.resumable_chat:app", ready_path="/")
    page = browser.new_page()
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#answer').textContent.split(' ').length > 6")
    page.reload()  # mid-answer
    assert 0 < len(answer(page)) < len("".join(WORDS))  # the text so far, at once
    page.wait_for_function("document.title === 'ended: done'", timeout=20_000)
    assert answer(page) == "".join(WORDS)  # exactly, no word twice or lost
    assert len(posts) == 1  # the reload resumed by GET; the model ran once

    # Stop: the generator stops wherever it runs; the log says cancelled.
    page = browser.new_page()
    locations = []
    page.on(
        "response",
        lambda r: (
            locations.append(r.headers["content-location"])
            if "content-location" in r.headers
            else None
        ),
    )
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 0")
    page.click("#stop")
    page.wait_for_function("document.title === 'ended: stopped'")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(100):
            with connect_sse(http, "GET", locations[0]) as source:
                events = list(source.iter_sse())
            if events and events[-1].event == "evstream-end":
                break
            time.sleep(0.05)
    assert events[-1].data == '{"reason":"cancelled"}'
    assert len(events) - 1 < len(WORDS)


def test_chat_client_resumes_after_cuts(start_server: t.Callable[..., Server]) -> None:
    from docs.examples.chat_client import ask

    server = start_server("docs.examples.resumable_chat:app", ready_path="/")
    proxy = CuttingProxy([("127.0.0.1", server.port)])
    try:
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(ask(proxy.url, "?")))
        thread.start()
        for _ in range(2):
            time.sleep(0.5)
            proxy.cut()
        thread.join(30)
        assert result == ["".join(WORDS)]
        assert proxy.connections >= 3  # the POST, then a GET after each cut
    finally:
        proxy.close()


def test_notifications_pages_and_the_gap(
    start_server: t.Callable[..., Server], browser: Browser
) -> None:
    server = start_server(
        "docs.examples.notify:app",
        ready_path="/",
        env={"FLASK_EVSTREAM_HISTORY": "3", "FLASK_EVSTREAM_RETRY": "200"},
    )
    proxy = CuttingProxy([("127.0.0.1", server.port)])
    try:
        pages = [browser.new_page() for _ in range(2)]
        for page in pages:
            page.goto(proxy.url + "/")
            page.wait_for_function("typeof source !== 'undefined' && source.readyState === 1")
        httpx.post(server.url + "/notify", json={"title": "Deployed"}).raise_for_status()
        for page in pages:
            page.wait_for_function("document.querySelector('#badge').textContent === '1'")
            assert page.evaluate("document.querySelector('#list').textContent") == "Deployed"
            page.evaluate("window.before_the_gap = true")
        # The network goes away while more is published than the history holds.
        proxy.refusing = True
        proxy.cut()
        for i in range(5):
            httpx.post(server.url + "/notify", json={"title": f"missed {i}"}).raise_for_status()
        proxy.refusing = False
        # Back: the stream sends evstream-gap first, and the page starts over.
        for page in pages:
            page.wait_for_function("window.before_the_gap === undefined", timeout=15_000)
            page.wait_for_function("typeof source !== 'undefined' && source.readyState === 1")
        httpx.post(server.url + "/notify", json={"title": "After"}).raise_for_status()
        for page in pages:
            page.wait_for_function("document.querySelector('#badge').textContent === '1'")
            assert page.evaluate("document.querySelector('#list').textContent") == "After"
    finally:
        proxy.close()


def test_progress_page_follows_a_job_across_a_reload(
    start_server: t.Callable[..., Server], browser: Browser
) -> None:
    server = start_server("docs.examples.progress:app", ready_path="/")
    page = browser.new_page()
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(server.url + "/")
    page.click("#start")
    page.wait_for_function("document.querySelector('#bar').value >= 30")
    page.reload()
    # The bar is back where the job is (from the channel's history), at once.
    page.wait_for_function("document.querySelector('#bar').value >= 30")
    page.wait_for_function(
        "document.querySelector('#status').textContent === 'done'", timeout=15_000
    )
    assert page.evaluate("document.querySelector('#bar').value") == 100
    assert len(posts) == 1  # the job was started once


HTMX = EXAMPLES / "node_modules"


@pytest.fixture(scope="module")
def htmx_files() -> dict[str, Path]:
    """The copies the htmx page loads from a CDN, at the versions it names
    (package.json pins the same ones; npm installs them the first time)."""
    package = json.loads((EXAMPLES / "package.json").read_text())["dependencies"]
    if not all((HTMX / name / "package.json").is_file() for name in package):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLES, check=True, timeout=300
        )
    html = (EXAMPLES / "htmx.html").read_text()
    files = {}
    for src in re.findall(r'<script src="([^"]+)"', html):
        name, version, path = re.fullmatch(
            r"https://unpkg\.com/([\w.-]+)@([\d.]+)/(.+)", src
        ).groups()  # type: ignore[union-attr]
        assert package[name] == version, (name, version)
        installed = json.loads((HTMX / name / "package.json").read_text())["version"]
        assert installed == version
        files[src] = HTMX / name / path
        assert files[src].is_file(), files[src]
    assert len(files) == 2
    return files


def serve(path: Path) -> t.Callable[[t.Any], None]:
    return lambda route: route.fulfill(path=str(path))


def test_htmx_page_swaps_progress_and_closes(
    start_server: t.Callable[..., Server], browser: Browser, htmx_files: dict[str, Path]
) -> None:
    server = start_server("docs.examples.progress:app", ready_path="/")
    page = browser.new_page()
    for url, path in htmx_files.items():
        page.route(url, serve(path))
    page.goto(server.url + "/htmx")
    page.click("button")
    page.wait_for_selector("#job [sse-swap=progress] progress", timeout=10_000)
    page.wait_for_function(
        "document.querySelector('#job [sse-swap=done]').textContent === 'Done.'", timeout=15_000
    )
    assert page.evaluate("document.querySelector('#job progress').value") == 100


# -- security.rst's JavaScript --------------------------------------------------


def test_security_page_javascript(start_server: t.Callable[..., Server], browser: Browser) -> None:
    from .test_cors_auth import APP, LOGIN

    page_server = start_server(APP)
    api = start_server(APP, env={"TEST_PAGE_ORIGIN": page_server.url, "TEST_TOKEN_MAX_AGE": "2"})
    page = browser.new_page()
    page.goto(f"{page_server.url}/page?api={api.url}")
    page.wait_for_function("window.ready === true")
    assert page.evaluate(LOGIN) == 200

    # The first block: a channel with the cookie, and a resumable POST.
    first = sample("security.rst#1").replace("https://api.example.com", api.url)
    assert api.url in first
    page.evaluate(
        """async (code) => {
          const { stream } = await import("/evstream/evstream.js");
          window.got = [];
          const onEvent = (e) => window.got.push(e.data);
          const prompt = "hello";
          const body = code + "\\nreturn {events, handle};";
          const run = new Function("stream", "onEvent", "prompt", body);
          const { events, handle } = run(stream, onEvent, prompt);
          window.hello = null;
          events.addEventListener("hello", (e) => { window.hello = JSON.parse(e.data); });
          window.handle = handle;
          window.events = events;
        }""",
        first,
    )
    page.wait_for_function("window.hello !== null")
    assert page.evaluate("window.hello") == {"user": "ada"}
    page.wait_for_function("window.got.length >= 3")
    assert page.evaluate("window.got.slice(0, 3)") == ["token 0", "token 1", "token 2"]
    page.evaluate("window.handle.stop(); window.events.close()")

    # The second block: a signed token in the URL, a new one at each reauth.
    page.evaluate(
        """(code) => {
          window.shown = [];
          const show = (data) => window.shown.push(data);
          new Function("show", code)(show);
        }""",
        sample("security.rst#2"),
    )
    published = []
    for n in range(6):
        published.append({"n": n})
        httpx.post(api.url + "/publish", json={"n": n}).raise_for_status()
        page.wait_for_function(f"window.shown.length === {n + 1}", timeout=10_000)
        page.wait_for_timeout(500)  # spread over more than one token's life
    assert page.evaluate("window.shown") == published  # none missed, none twice
